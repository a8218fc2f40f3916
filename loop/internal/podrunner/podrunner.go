// Package podrunner is a test stand-in for the kubelet (and the scheduler):
// it registers one Ready Node, binds the pending pods of one namespace to
// it, runs each pod's containers as local processes, reports their status
// to the apiserver, and stops them on deletion the way the kubelet does.
//
// It exists so that tests can run real Deployments, ReplicaSets and the
// HorizontalPodAutoscaler on a real control plane (internal/kubetest)
// without containers. Images are not pulled: each image name maps to a
// local command through Config.Images, which the test supplies.
//
// Each pod has a network namespace of its own, so its containers share a
// loopback of their own and listen on the same ports as every other pod.
// The pod's IP is a loopback address of the host (127.0.K.N, K the
// runner's own block, 1 unless another runner on the host holds it),
// where the runner forwards each port the pod declares into the namespace;
// inside the pod, the node's address (127.0.0.1) answers the ports of
// Config.HostPorts. So every address anything connects to is a loopback
// address, and no interface, route or sysctl of the host is touched.
// There are no mount or PID namespaces, no volumes, no resource limits, no
// liveness probes, and no container restarts (a container that exits stays
// exited and its status says so). docs/scaling-loop.md lists what it does
// and does not do.
package podrunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Image is the local command that stands in for a container image.
type Image struct {
	// Entrypoint is the program and its fixed arguments (the image's
	// ENTRYPOINT). A container's command replaces it.
	Entrypoint []string
	// Cmd are the default arguments (the image's CMD). A container's args
	// replace them.
	Cmd []string
	// Env are KEY=VALUE pairs the image sets (the image's ENV); the
	// container's env overrides them.
	Env []string
}

// Config says which pods to run and how.
type Config struct {
	// Client talks to the apiserver; it needs rights on nodes, pods,
	// pods/binding, pods/status, secrets and configmaps.
	Client kubernetes.Interface
	// Namespace is the only namespace whose pods are bound and run.
	Namespace string
	// NodeName is the Node to register (default "podrunner").
	NodeName string
	// Images maps each image name used by the pods to a local command. A
	// pod with an image not in it gets a container status saying so, and
	// never runs.
	Images map[string]Image
	// HostPorts maps a port of the node's address (status.hostIP, which
	// is 127.0.0.1) as the pods see it to the address on the runner's host
	// that answers it: {8500: consul} for pods that reach a node-local
	// Consul agent at $(HOST_IP):8500.
	HostPorts map[int]string
	// Dir holds one log file per container, <pod>_<container>.log.
	Dir string
	// Started, when set, is called as each container's process starts.
	Started func(pod, container string, at time.Time)
	// Log receives what the runner does (default: discarded).
	Log *slog.Logger
}

// Runner runs the pods of one namespace until its context ends.
type Runner struct {
	cfg   Config
	addrs *addresses

	mu      sync.Mutex
	workers map[string]*podWorker // by pod name
	wg      sync.WaitGroup        // the pod workers
}

// New checks cfg and returns a Runner; Run starts it.
func New(cfg Config) (*Runner, error) {
	if cfg.Client == nil {
		return nil, errors.New("podrunner: Config.Client is nil")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("podrunner: Config.Namespace is empty")
	}
	if cfg.Dir == "" {
		return nil, errors.New("podrunner: Config.Dir is empty")
	}
	if cfg.NodeName == "" {
		cfg.NodeName = "podrunner"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg, workers: map[string]*podWorker{}}, nil
}

// LogFile is the file that holds the output of container in pod.
func (r *Runner) LogFile(pod, container string) string {
	return logFile(r.cfg.Dir, pod, container)
}

// Run registers the Node, then binds, runs and stops pods until ctx ends.
// It then kills every container it started and returns once they have
// exited.
func (r *Runner) Run(ctx context.Context) error {
	block, lock, err := claimAddressBlock()
	if err != nil {
		return err
	}
	defer lock.Close()
	r.addrs = newAddresses(block)
	if err := r.registerNode(ctx); err != nil {
		return err
	}
	defer r.wg.Wait()
	defer r.stopAll()

	factory := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0, informers.WithNamespace(r.cfg.Namespace))
	pods := factory.Core().V1().Pods()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	_, err = pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	if err != nil {
		return fmt.Errorf("podrunner: watch pods in %s: %w", r.cfg.Namespace, err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return nil
	}
	stopQueue := context.AfterFunc(ctx, queue.ShutDown)
	defer stopQueue()
	for {
		key, quit := queue.Get()
		if quit {
			return nil
		}
		err := r.sync(ctx, pods.Lister(), key)
		if err != nil && ctx.Err() == nil {
			r.cfg.Log.Error("sync pod", "pod", key, "err", err)
			queue.AddRateLimited(key)
		} else {
			queue.Forget(key)
		}
		queue.Done(key)
	}
}

// sync does for one pod what the scheduler and kubelet would: bind it,
// start it, or stop it.
func (r *Runner) sync(ctx context.Context, lister corelisters.PodLister, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	pod, err := lister.Pods(ns).Get(name)
	r.mu.Lock()
	w := r.workers[name]
	r.mu.Unlock()
	if apierrors.IsNotFound(err) {
		if w != nil {
			w.vanished()
		}
		return nil
	}
	if err != nil {
		return err
	}
	if w != nil && w.uid != pod.UID {
		w.kill()
		return fmt.Errorf("pod %s was replaced while its old containers run", key)
	}
	switch {
	case pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil:
		return r.bind(ctx, pod)
	case pod.Spec.NodeName != r.cfg.NodeName:
	case w == nil && pod.DeletionTimestamp == nil && !finished(pod):
		return r.startWorker(ctx, pod)
	case w != nil && pod.DeletionTimestamp != nil:
		grace := int64(0)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = *pod.DeletionGracePeriodSeconds
		}
		w.terminate(time.Duration(grace) * time.Second)
	}
	return nil
}

func finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

func (r *Runner) bind(ctx context.Context, pod *corev1.Pod) error {
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: r.cfg.NodeName},
	}
	err := r.cfg.Client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("bind pod %s to node %s: %w", pod.Name, r.cfg.NodeName, err)
	}
	r.cfg.Log.Info("bound pod", "pod", pod.Name, "node", r.cfg.NodeName)
	return nil
}

func (r *Runner) startWorker(ctx context.Context, pod *corev1.Pod) error {
	ip, err := r.addrs.take()
	if err != nil {
		return fmt.Errorf("start pod %s: %w", pod.Name, err)
	}
	w := newPodWorker(r.cfg, pod.DeepCopy(), ip)
	r.mu.Lock()
	r.workers[pod.Name] = w
	r.mu.Unlock()
	r.wg.Go(func() {
		w.run(ctx)
		r.mu.Lock()
		delete(r.workers, pod.Name)
		r.mu.Unlock()
		r.addrs.give(ip)
	})
	return nil
}

// stopAll kills the containers of every pod, for when the runner stops.
func (r *Runner) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		w.kill()
	}
}

// registerNode creates (or refreshes) the Node the pods are bound to, Ready
// and with room for any number of pods. Nothing marks it NotReady later:
// the controller manager runs no node lifecycle controller.
func (r *Runner) registerNode(ctx context.Context) error {
	nodes := r.cfg.Client.CoreV1().Nodes()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   r.cfg.NodeName,
		Labels: map[string]string{corev1.LabelHostname: r.cfg.NodeName, corev1.LabelOSStable: "linux"},
	}}
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = nodes.Get(ctx, r.cfg.NodeName, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("podrunner: register node %q: %w", r.cfg.NodeName, err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "PodrunnerReady",
			Message: "podrunner, a test stand-in for the kubelet", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: hostIP},
			{Type: corev1.NodeHostName, Address: r.cfg.NodeName},
		},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "podrunner", OperatingSystem: "linux", Architecture: "amd64"},
	}
	if _, err := nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("podrunner: mark node %q Ready: %w", r.cfg.NodeName, err)
	}
	return nil
}

// claimAddressBlock claims a block of the host's loopback, 127.0.K.0/24,
// for one runner's pods: K is the first from 1 that no other runner on the
// host holds. Two runners at once (two test runs, or go test running
// podrunner's and the scaling loop's packages in parallel) must not hand
// out the same address: the second pod's forward would find it taken.
// The lock is an abstract Unix socket named for the block, which the
// runner holds until Run returns and the kernel lets go if the process
// dies.
func claimAddressBlock() (block byte, lock net.Listener, err error) {
	for k := 1; k <= 254; k++ {
		lock, err = net.Listen("unix", "@outrider-podrunner-127.0."+strconv.Itoa(k)+".0")
		if err == nil {
			return byte(k), lock, nil
		}
	}
	return 0, nil, fmt.Errorf("podrunner: no pod address block free from 127.0.1.0/24 to 127.0.254.0/24 (other runners on this host hold them; stop them): %w", err)
}

// addresses hands out the pod IPs 127.0.K.1 … 127.0.K.254 of block K,
// each time the next free one after the last handed out, so that an
// address is not reused as soon as its pod is gone (a client still holding
// it should find nothing there, not the next pod).
type addresses struct {
	mu    sync.Mutex
	block byte
	used  map[byte]bool
	last  byte
}

func newAddresses(block byte) *addresses { return &addresses{block: block, used: map[byte]bool{}} }

func (a *addresses) take() (net.IP, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := 1; i <= 254; i++ {
		n := byte((int(a.last)+i-1)%254 + 1)
		if !a.used[n] {
			a.used[n], a.last = true, n
			return net.IPv4(127, 0, a.block, n).To4(), nil
		}
	}
	return nil, fmt.Errorf("all 254 pod addresses in 127.0.%d.0/24 are in use", a.block)
}

func (a *addresses) give(ip net.IP) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.used, ip.To4()[3])
}
