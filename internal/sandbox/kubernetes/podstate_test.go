package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func cond(t corev1.PodConditionType, s corev1.ConditionStatus, reason, msg string) corev1.PodCondition {
	return corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg}
}

func guestState(st corev1.ContainerState) []corev1.ContainerStatus {
	return []corev1.ContainerStatus{{Name: GuestContainer, State: st}}
}

func runningPod() *corev1.Pod {
	return &corev1.Pod{Status: corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: "10.244.0.7",
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, corev1.ConditionTrue, "", ""), cond(corev1.PodReady, corev1.ConditionTrue, "", ""),
		},
		ContainerStatuses: guestState(corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}),
	}}
}

func TestStartState(t *testing.T) {
	unscheduled := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
		cond(corev1.PodScheduled, corev1.ConditionFalse, "Unschedulable", "0/1 nodes are available: 1 Insufficient memory."),
	}}}
	pulling := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending,
		Conditions:        []corev1.PodCondition{cond(corev1.PodScheduled, corev1.ConditionTrue, "", "")},
		ContainerStatuses: guestState(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}),
	}}
	badImage := pulling.DeepCopy()
	badImage.Status.ContainerStatuses = guestState(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason: "ErrImagePull", Message: `pull access denied for "nope"`,
	}})
	noIP := runningPod()
	noIP.Status.PodIP = ""
	crashed := runningPod()
	crashed.Status.Phase = corev1.PodFailed
	crashed.Status.ContainerStatuses = guestState(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Message: "--pod: secret token: no such file"}})
	deleting := pulling.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{}

	for name, tc := range map[string]struct {
		pod              *corev1.Pod
		phase            string
		running          bool
		why, errContains string
	}{
		"unscheduled": {pod: unscheduled, phase: phaseSchedule, why: "Insufficient memory"},
		"new":         {pod: &corev1.Pod{}, phase: phaseSchedule, why: "not been scheduled"},
		"pulling":     {pod: pulling, phase: phasePull, why: "ContainerCreating"},
		"bad image":   {pod: badImage, errContains: "pull access denied"},
		"no address":  {pod: noIP, phase: phaseStart},
		"running":     {pod: runningPod(), phase: phaseStart, running: true},
		"crashed":     {pod: crashed, errContains: "no such file"},
		"deleting":    {pod: deleting, errContains: "deleted"},
	} {
		phase, running, why, err := startState(tc.pod)
		switch {
		case tc.errContains != "":
			if err == nil || !strings.Contains(err.Error(), tc.errContains) {
				t.Errorf("%s: error %v, want one about %q", name, err, tc.errContains)
			}
		case err != nil:
			t.Errorf("%s: %v", name, err)
		case phase != tc.phase || running != tc.running || !strings.Contains(why, tc.why):
			t.Errorf("%s: %q %v %q, want %q %v %q", name, phase, running, why, tc.phase, tc.running, tc.why)
		}
	}
}

func TestExitReason(t *testing.T) {
	if r := exitReason(runningPod(), false, true); r != "" {
		t.Fatalf("a running pod has ended: %s", r)
	}
	evicted := runningPod()
	evicted.Status.Phase, evicted.Status.Reason, evicted.Status.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
	oom := runningPod()
	oom.Status.Phase = corev1.PodFailed
	oom.Status.ContainerStatuses = guestState(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}})
	taint := runningPod()
	taint.Status.Conditions = append(taint.Status.Conditions, cond(corev1.DisruptionTarget, corev1.ConditionTrue, "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint"))
	notReady := runningPod()
	notReady.Status.Conditions[1].Status = corev1.ConditionFalse
	unknown := runningPod()
	unknown.Status.Phase = corev1.PodUnknown
	deleting := runningPod()
	deleting.DeletionTimestamp = &metav1.Time{}

	for name, tc := range map[string]struct {
		pod      *corev1.Pod
		deleted  bool
		wasReady bool
		want     string
	}{
		"evicted":             {pod: evicted, want: "evicted the pod: The node was low on resource: memory."},
		"oom":                 {pod: oom, want: "ran out of memory"},
		"node lost":           {pod: taint, want: "node was lost"},
		"node not ready":      {pod: notReady, wasReady: true, want: "node is not ready"},
		"not ready yet":       {pod: notReady, wasReady: false, want: ""},
		"unknown":             {pod: unknown, want: "stopped reporting"},
		"deleted":             {pod: runningPod(), deleted: true, want: "deleted (not by this server)"},
		"deleting":            {pod: deleting, want: "being deleted"},
		"deleted and evicted": {pod: taint, deleted: true, want: "node was lost"},
	} {
		got := exitReason(tc.pod, tc.deleted, tc.wasReady)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
}
