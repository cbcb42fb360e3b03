package kubernetes

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Start phases, as Spec.Progress is told them.
const (
	phaseSchedule = "schedule" // waiting for a node
	phaseInit     = "init"     // the template's init containers run
	phasePull     = "pull"     // on its node: the image is pulled, the container made
	phaseStart    = "start"    // the container runs; the pod has no address yet
)

// cannotStart are the reasons a container waits for that waiting will not
// cure within a start: a missing or unreachable image, a bad reference, a
// configuration the runtime refuses. The kubelet would retry them for ever.
var cannotStart = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// startState is how far a pod has come towards running its guest: the
// phase to report, whether the guest container runs and the pod has an
// address, and an error when it never will. why is what to say should the
// start time out now (the scheduler's complaint, say).
func startState(pod *corev1.Pod) (phase string, running bool, why string, err error) {
	if pod.DeletionTimestamp != nil {
		return "", false, "", fmt.Errorf("the pod is being deleted (by someone else) while it starts")
	}
	if r := exitReason(pod, false, false); r != "" {
		return "", false, "", fmt.Errorf("the pod ended while it started: %s", r)
	}
	if sched := podCondition(pod, corev1.PodScheduled); sched == nil || sched.Status != corev1.ConditionTrue {
		why = "the pod has not been scheduled"
		if sched != nil && sched.Message != "" {
			why += ": " + sched.Message
		}
		return phaseSchedule, false, why, nil
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		if w := cs.State.Waiting; w != nil && cannotStart[w.Reason] {
			return "", false, "", fmt.Errorf("init container %s cannot start: %s", cs.Name, waitingText(w))
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return "", false, "", fmt.Errorf("init container %s failed: %s", cs.Name, terminatedText(t))
		}
	}
	if init := podCondition(pod, corev1.PodInitialized); len(pod.Spec.InitContainers) > 0 && (init == nil || init.Status != corev1.ConditionTrue) {
		return phaseInit, false, "the pod's init containers have not finished", nil
	}
	cs := guestStatus(pod)
	if cs == nil || cs.State.Running == nil {
		why = "the guest container has not started"
		if cs != nil && cs.State.Waiting != nil {
			if cannotStart[cs.State.Waiting.Reason] {
				return "", false, "", fmt.Errorf("the guest container cannot start: %s", waitingText(cs.State.Waiting))
			}
			why += ": " + waitingText(cs.State.Waiting)
		}
		return phasePull, false, why, nil
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
		return phaseStart, false, "the pod has no address yet", nil
	}
	return phaseStart, true, "", nil
}

// exitReason says why a pod that ran a sandbox has ended, or is lost: ""
// while it runs on. deleted says the pod is gone from the API; wasReady
// that it had been Ready, so that Ready turning False means its node has
// stopped reporting (the node controller marks a lost node's pods so; a
// guest without readiness probes is otherwise Ready while it runs).
func exitReason(pod *corev1.Pod, deleted, wasReady bool) string {
	if d := podCondition(pod, corev1.DisruptionTarget); d != nil && d.Status == corev1.ConditionTrue {
		return disruptionText(d)
	}
	if cs := guestStatus(pod); cs != nil && cs.State.Terminated != nil {
		t := cs.State.Terminated
		if t.Reason == "OOMKilled" {
			return "the guest ran out of memory (OOMKilled: it used its whole memory limit)"
		}
		return "the guest exited: " + terminatedText(t)
	}
	switch {
	case pod.Status.Reason == "Evicted":
		return "the node evicted the pod: " + pod.Status.Message
	case pod.Status.Reason == "NodeLost":
		return "the pod's node was lost: " + pod.Status.Message
	case pod.Status.Phase == corev1.PodFailed:
		return "the pod failed: " + joinNonEmpty(pod.Status.Reason, pod.Status.Message)
	case pod.Status.Phase == corev1.PodSucceeded:
		return "the pod's containers exited"
	case pod.Status.Phase == corev1.PodUnknown:
		return "the pod's node stopped reporting: the pod's state is unknown"
	case deleted:
		return "the pod was deleted (not by this server)"
	case pod.DeletionTimestamp != nil:
		return "the pod is being deleted (not by this server)"
	}
	if ready := podCondition(pod, corev1.PodReady); wasReady && ready != nil && ready.Status != corev1.ConditionTrue {
		return "the pod's node is not ready (it stopped reporting, or is shutting down): the guest cannot be counted on"
	}
	return ""
}

// disruptionText explains a DisruptionTarget condition: why the cluster
// is taking the pod away.
func disruptionText(c *corev1.PodCondition) string {
	why := map[string]string{
		"DeletionByTaintManager": "the pod's node was lost or tainted, and the pod removed from it",
		"EvictionByEvictionAPI":  "the pod was evicted (a node drain, or the eviction API)",
		"PreemptionByScheduler":  "the pod was preempted by a pod of higher priority",
		"TerminationByKubelet":   "the node evicted the pod (it ran short of resources, or is shutting down)",
		"DeletionByPodGC":        "the pod's node is gone",
	}[c.Reason]
	if why == "" {
		why = "the cluster is taking the pod away (" + c.Reason + ")"
	}
	if c.Message != "" {
		why += ": " + c.Message
	}
	return why
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func guestStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == GuestContainer {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

func ready(pod *corev1.Pod) bool {
	c := podCondition(pod, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

func waitingText(w *corev1.ContainerStateWaiting) string { return joinNonEmpty(w.Reason, w.Message) }

func terminatedText(t *corev1.ContainerStateTerminated) string {
	return joinNonEmpty(fmt.Sprintf("code %d", t.ExitCode), t.Reason, t.Message)
}

func joinNonEmpty(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return "no reason given"
	}
	return strings.Join(out, ": ")
}
