package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/execlaw/execlaw/internal/guest"
)

// logTailBytes bounds the guest's log carried in a start error.
const logTailBytes = 2 << 10

// byName lists and watches one object, by name, through a kind's List
// and Watch.
func byName[L runtime.Object](
	name string,
	list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) *cache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return watchFn(ctx, o)
		},
	}
}

// podListWatch lists and watches one pod, by name.
func (d *Driver) podListWatch(name string) *cache.ListWatch {
	pods := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace)
	return byName(name, pods.List, pods.Watch)
}

// watchPod calls fn with the pod's state as it is first, then as it
// changes, until fn says done or gives an error, or ctx ends. A pod that
// is not there, or is deleted, is passed with deleted true (the pod as last
// seen, or nil). The informer under it lists again when its watch breaks,
// so no change is missed for long, whatever the API server does.
func (d *Driver) watchPod(ctx context.Context, name string, fn func(pod *corev1.Pod, deleted bool) (bool, error)) error {
	pre := func(store cache.Store) (bool, error) {
		obj, exists, err := store.GetByKey(d.cfg.Namespace + "/" + name)
		if err != nil {
			return false, err
		}
		if !exists {
			return fn(nil, true)
		}
		return fn(obj.(*corev1.Pod), false)
	}
	cond := func(ev watch.Event) (bool, error) {
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok || pod.Name != name {
			return false, nil // the API server's field selector does this, a fake's does not
		}
		return fn(pod, ev.Type == watch.Deleted)
	}
	_, err := watchtools.UntilWithSync(ctx, d.podListWatch(name), &corev1.Pod{}, pre, cond)
	return err
}

// waitRunning waits until the pod runs the guest and has an address,
// telling progress each phase it reaches; the error says why it never
// will, or what it was waiting for when ctx ended.
func (d *Driver) waitRunning(ctx context.Context, name string, progress func(string)) (*corev1.Pod, error) {
	var (
		running *corev1.Pod
		phase   string
		why     = "the pod was not seen yet"
	)
	err := d.watchPod(ctx, name, func(pod *corev1.Pod, deleted bool) (bool, error) {
		if deleted {
			if pod == nil {
				// Not in the first listing, which the API server may
				// serve from its watch cache, behind the create: a
				// read of its own says whether the pod is there.
				_, err := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
				if err == nil {
					return false, nil
				}
				if !apierrors.IsNotFound(err) {
					return false, err
				}
				return false, errors.New("the pod is gone (deleted by someone else)")
			}
			return false, fmt.Errorf("the pod was deleted while it started: %s", exitReason(pod, true, false))
		}
		ph, ok, w, err := startState(pod)
		if err != nil {
			return false, err
		}
		why = w
		if ph != phase {
			phase = ph
			progress(ph)
		}
		if ok {
			running = pod
		}
		return ok, nil
	})
	switch {
	case err == nil:
		return running, nil
	case errors.Is(ctx.Err(), context.Canceled):
		return nil, fmt.Errorf("the start was called off: %s (%w)", why, context.Cause(ctx))
	case ctx.Err() != nil || errors.Is(err, watchtools.ErrWatchClosed):
		return nil, fmt.Errorf("the pod did not start in time: %s (%w)", why, context.Cause(ctx))
	}
	return nil, d.withPodState(err, name)
}

// withPodState adds to a start error the end of the guest's log, when its
// container ran: the guest says why it stopped or refused, as a VM's
// console does.
func (d *Driver) withPodState(err error, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tail := int64(40)
	limit := int64(logTailBytes)
	req := d.cfg.Client.CoreV1().Pods(d.cfg.Namespace).GetLogs(name, &corev1.PodLogOptions{
		Container: GuestContainer, TailLines: &tail, LimitBytes: &limit,
	})
	rc, lerr := req.Stream(ctx)
	if lerr != nil {
		return err
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc, logTailBytes))
	if s := strings.TrimSpace(string(b)); s != "" {
		return fmt.Errorf("%w; guest log:\n%s", err, s)
	}
	return err
}

// connectGuest dials the guest until it answers Health with this build's
// protocol, or ctx ends. The container runs a moment before the guest
// listens, so a refused connection is tried again, on a ticker; a guest
// that refuses the credentials is not.
func connectGuest(ctx context.Context, addr string, cred guest.PodCredentials) (*guestConn, error) {
	ch, err := guest.NewPodChannel(addr, cred)
	if err != nil {
		return nil, err
	}
	client := guest.NewClient(ch.Dial)
	fail := func(err error) (*guestConn, error) {
		client.Close()
		ch.Close()
		return nil, err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := client.Health(actx)
		cancel()
		switch {
		case err == nil && h.Version != guest.Version:
			return fail(fmt.Errorf("the guest speaks protocol %q, want %q: the image is of another release", h.Version, guest.Version))
		case err == nil:
			return &guestConn{client: client, channel: ch}, nil
		case errors.Is(err, guest.ErrPodAuth):
			return fail(err)
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("it did not answer in time: %v", err))
		case <-tick.C:
		}
	}
}

// guestConn is the host's end of a guest: its client, over its channel.
type guestConn struct {
	client  *guest.Client
	channel *guest.PodChannel
}

func (c *guestConn) close() {
	c.client.Close()
	c.channel.Close()
}

// waitGone waits until get finds nothing, by watching: list, then watch
// from there for the deletion.
func waitGone(ctx context.Context, lw cache.ListerWatcher, objType runtime.Object, key string) error {
	pre := func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(key)
		return !exists, err
	}
	cond := func(ev watch.Event) (bool, error) {
		m, err := meta.Accessor(ev.Object)
		return err == nil && ev.Type == watch.Deleted && m.GetNamespace()+"/"+m.GetName() == key, nil
	}
	_, err := watchtools.UntilWithSync(ctx, lw, objType, pre, cond)
	return err
}

// ignoreNotFound makes deleting what is not there a success.
func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
