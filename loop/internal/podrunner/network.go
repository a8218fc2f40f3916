package podrunner

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// hostIP is the node's address: the host's own loopback address outside
// the pods, and inside each pod an address where the runner answers the
// ports of Config.HostPorts.
const hostIP = "127.0.0.1"

// openNetwork makes the pod's network namespace and starts forwarding:
// each TCP port of podPorts, from podIP on the host into
// the namespace; each port of Config.HostPorts, from hostIP in the
// namespace out to its address on the host.
func (w *podWorker) openNetwork() error {
	ns, err := newNetns()
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	w.ns = ns
	podIP := w.ip.String()
	w.prober = newProber(podIP, ns.dial)
	for _, port := range podPorts(w.pod) {
		addr := net.JoinHostPort(podIP, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("pod network: forward %s into the pod: %w", addr, err)
		}
		w.fwd.serve(ln, func() (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
			defer cancel()
			return ns.dial(ctx, "tcp", addr)
		})
	}
	for _, port := range slices.Sorted(maps.Keys(w.cfg.HostPorts)) {
		addr, target := net.JoinHostPort(hostIP, strconv.Itoa(port)), w.cfg.HostPorts[port]
		var ln net.Listener
		err := ns.do(func() (err error) {
			ln, err = net.Listen("tcp", addr)
			return err
		})
		if err != nil {
			return fmt.Errorf("pod network: answer the node's %s in the pod: %w", addr, err)
		}
		w.fwd.serve(ln, func() (net.Conn, error) { return net.DialTimeout("tcp", target, dialTimeout) })
	}
	return nil
}

// closeNetwork stops forwarding and lets the namespace go, once the pod's
// processes have exited.
func (w *podWorker) closeNetwork() {
	w.fwd.close()
	if w.ns != nil {
		w.ns.close()
	}
}

// podPorts lists the TCP ports the pod's containers declare, and those
// their probes and hooks reach (the kubelet reaches a port whether it is
// declared or not), each once.
func podPorts(pod *corev1.Pod) []int {
	var ports []int
	add := func(c *corev1.Container, port intstr.IntOrString) {
		if n, err := resolvePort(port, c); err == nil {
			ports = append(ports, n)
		}
	}
	handler := func(c *corev1.Container, h *corev1.ProbeHandler) {
		switch {
		case h.HTTPGet != nil:
			add(c, h.HTTPGet.Port)
		case h.TCPSocket != nil:
			add(c, h.TCPSocket.Port)
		}
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			c := &cs[i]
			for _, p := range c.Ports {
				if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
					ports = append(ports, int(p.ContainerPort))
				}
			}
			for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if p != nil {
					handler(c, &p.ProbeHandler)
				}
			}
			if c.Lifecycle != nil {
				for _, h := range []*corev1.LifecycleHandler{c.Lifecycle.PostStart, c.Lifecycle.PreStop} {
					if h != nil {
						handler(c, &corev1.ProbeHandler{HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket})
					}
				}
			}
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}
