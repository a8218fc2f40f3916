package inject

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outrider-sidecar/outrider/internal/servicename"
	probespec "github.com/outrider-sidecar/outrider/probe"
)

// Annotations the injector reads, on the pod template (or, for a Pod, on
// the Pod); the pod template's value wins over the workload's own.
const (
	AnnotationInject        = "outrider.io/inject"         // "true" to inject, "false" never to
	AnnotationServiceName   = "outrider.io/service-name"   // OUTRIDER_SERVICE_NAME; default: label app.kubernetes.io/name, app, or the workload's name
	AnnotationAppContainer  = "outrider.io/app-container"  // the container outrider fronts; default: the first
	AnnotationAppPort       = "outrider.io/app-port"       // the app's port; default: the app container's first TCP port, else 8080
	AnnotationProbe         = "outrider.io/probe"          // OUTRIDER_PROBE; default: tcp to the app port
	AnnotationDrainDelay    = "outrider.io/drain-delay"    // OUTRIDER_DRAIN_DELAY; default 5s
	AnnotationDrainTimeout  = "outrider.io/drain-timeout"  // OUTRIDER_DRAIN_TIMEOUT; default 25s
	AnnotationImage         = "outrider.io/image"          // the sidecar's image; default: the --image flag
	AnnotationNativeSidecar = "outrider.io/native-sidecar" // "false" for clusters older than 1.29: a regular container
	AnnotationConsulSecret  = "outrider.io/consul-token-secret"
	// AnnotationInjected is the injector's own: "true" marks the container
	// named outrider as the one it added, which a new injection replaces
	// (keeping what the user added to it).
	AnnotationInjected = "outrider.io/injected"
)

// Defaults of the injected sidecar.
const (
	DefaultImage        = "outrider:dev"
	DefaultConsulSecret = "outrider-consul-token"
	defaultAppPort      = 8080
	defaultDrainDelay   = 5 * time.Second
	defaultDrainTimeout = 25 * time.Second
	// appStopAllowance is the app's own stop time, added to the pod's
	// grace period on top of the drain and the 5s margin.
	appStopAllowance = 10 * time.Second
)

// workload is the part of an object the injector changes.
type workload struct {
	obj, pod     *yaml.Node // the object; its pod spec
	podMeta      *yaml.Node // the pod template's metadata (or the Pod's)
	podMetaOf    *yaml.Node // where podMeta is, or is to be made: the template (or the Pod)
	name, labels string
}

// workloadOf finds the pod template; nil for kinds that have none. The pod
// spec may be missing: that is an error only if the object is to be
// injected.
func workloadOf(obj *yaml.Node) *workload {
	w := &workload{obj: obj, name: str(get(get(obj, "metadata"), "name"))}
	switch str(get(obj, "kind")) {
	case "Pod":
		w.podMetaOf, w.podMeta, w.pod = obj, get(obj, "metadata"), get(obj, "spec")
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet":
		tmpl := get(get(obj, "spec"), "template")
		w.podMetaOf, w.podMeta, w.pod = tmpl, get(tmpl, "metadata"), get(tmpl, "spec")
	case "PodTemplate":
		tmpl := get(obj, "template")
		w.podMetaOf, w.podMeta, w.pod = tmpl, get(tmpl, "metadata"), get(tmpl, "spec")
	default:
		return nil
	}
	return w
}

// annotation reads key from the pod template, then from the workload.
func (w *workload) annotation(key string) string {
	if v := get(get(w.podMeta, "annotations"), key); v != nil {
		return str(v)
	}
	return str(get(get(get(w.obj, "metadata"), "annotations"), key))
}

// annotationsMerge is a YAML merge key (<<) in the metadata or the
// annotations of the workload or its pod template, which might hold
// annotations that get does not see; nil if none.
func (w *workload) annotationsMerge() *yaml.Node {
	for _, meta := range []*yaml.Node{get(w.obj, "metadata"), w.podMeta} {
		for _, m := range []*yaml.Node{meta, get(meta, "annotations")} {
			if k := mergeKey(m, false); k != nil {
				return k
			}
		}
	}
	return nil
}

// wanted says whether the workload is to be injected, and why not. A
// value other than true, enabled, false or disabled is an error: passed
// through, a mistyped "True" would ship the workload without its sidecar.
func (w *workload) wanted(all bool) (bool, string, error) {
	switch v := w.annotation(AnnotationInject); v {
	case "true", "enabled":
		return true, "", nil
	case "false", "disabled":
		return false, AnnotationInject + ": " + v, nil
	case "":
		if all {
			return true, "", nil
		}
		return false, "no " + AnnotationInject + " annotation", nil
	default:
		return false, "", fmt.Errorf("%w: annotation %s: %q is neither true nor false (want \"true\" or \"false\", in lower case)", ErrBadInput, AnnotationInject, v)
	}
}

// settings is what the sidecar is made from.
type settings struct {
	service, appContainer, probe, image, consulSecret string
	appPort                                           int
	drainDelay, drainTimeout                          time.Duration
	native                                            bool
	token                                             string
	// earlier is the sidecar an earlier injection added; nil if none.
	earlier *yaml.Node
}

// graceSeconds is the pod's stop budget the drain needs.
func (s settings) graceSeconds() int64 {
	return int64((s.drainDelay + s.drainTimeout + 5*time.Second + appStopAllowance + time.Second - 1) / time.Second)
}

// secretName is a Secret's name: a DNS-1123 subdomain (dot-separated
// labels of lowercase letters, digits and '-', each starting and ending
// with a letter or digit), at most 253 characters.
var secretName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func validSecretName(s string) bool { return len(s) <= 253 && secretName.MatchString(s) }

func (w *workload) settings(opts Options) (settings, error) {
	if w.pod == nil || w.pod.Kind != yaml.MappingNode {
		return settings{}, fmt.Errorf("%w: no pod spec", ErrBadInput)
	}
	s := settings{
		service:      w.annotation(AnnotationServiceName),
		appContainer: w.annotation(AnnotationAppContainer),
		probe:        w.annotation(AnnotationProbe),
		image:        w.annotation(AnnotationImage),
		consulSecret: w.annotation(AnnotationConsulSecret),
		native:       true,
		drainDelay:   defaultDrainDelay,
		drainTimeout: defaultDrainTimeout,
	}
	var err error
	bad := func(key, value, want string) error {
		return fmt.Errorf("%w: annotation %s: %q %s", ErrBadInput, key, value, want)
	}
	if s.service == "" {
		for _, l := range []string{"app.kubernetes.io/name", "app"} {
			if v := str(get(get(w.podMeta, "labels"), l)); v != "" {
				s.service = v
				break
			}
		}
	}
	if s.service == "" {
		s.service = w.name
	}
	if s.service == "" {
		// An object with generateName only (a Pod made by `kubectl create`).
		return s, fmt.Errorf("%w: no service name: the pod has no label app.kubernetes.io/name or app and the object no name; set %s", ErrBadInput, AnnotationServiceName)
	}
	if !servicename.Valid(s.service) {
		return s, bad(AnnotationServiceName, s.service, "is not a valid service name (want letters, digits, '-', '_' and '.', starting with a letter or digit, at most 253 characters)")
	}
	// The agent refuses a probe it cannot parse, and the pod would never
	// start; the value is shown with a URL password masked.
	if s.probe != "" {
		if _, err := probespec.ParseSpec(s.probe); err != nil {
			shown, why := probespec.ExplainSpecError(s.probe, err)
			return s, bad(AnnotationProbe, shown, why)
		}
	}
	if s.image == "" {
		s.image = opts.Image
	}
	if s.earlier, err = w.earlierSidecar(); err != nil {
		return s, err
	}
	if s.image == "" {
		s.image = str(get(s.earlier, "image"))
	}
	if s.image == "" {
		s.image = DefaultImage
	}
	if s.consulSecret == "" {
		s.consulSecret = DefaultConsulSecret
	}
	// The API server refuses a pod that names a Secret it could not hold.
	if !validSecretName(s.consulSecret) {
		return s, bad(AnnotationConsulSecret, s.consulSecret, "is not a Secret name (want at most 253 lowercase letters, digits, '-' and '.', each part between dots starting and ending with a letter or digit)")
	}
	switch v := w.annotation(AnnotationNativeSidecar); v {
	case "", "true":
	case "false":
		s.native = false
	default:
		return s, bad(AnnotationNativeSidecar, v, "is neither true nor false")
	}
	// A pod that is to run to completion ends when all its regular
	// containers have exited; outrider, as one of them, never does.
	if rp := str(get(w.pod, "restartPolicy")); !s.native && (rp == "Never" || rp == "OnFailure") {
		return s, fmt.Errorf("%w: annotation %s: \"false\" with restartPolicy %s: outrider as a regular container never exits, so the pod would never complete "+
			"(use the native sidecar, Kubernetes 1.29 or later, which stops when the app has exited)", ErrBadInput, AnnotationNativeSidecar, rp)
	}
	for _, d := range []struct {
		key string
		to  *time.Duration
	}{{AnnotationDrainDelay, &s.drainDelay}, {AnnotationDrainTimeout, &s.drainTimeout}} {
		v := w.annotation(d.key)
		if v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur < 0 {
			return s, bad(d.key, v, "is not a duration (want e.g. 5s)")
		}
		*d.to = dur
	}
	app, err := w.appContainer(s.appContainer)
	if err != nil {
		return s, err
	}
	s.appContainer = str(get(app, "name"))
	if v := w.annotation(AnnotationAppPort); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return s, bad(AnnotationAppPort, v, "is not a port number (want 1-65535)")
		}
		s.appPort = p
	} else if s.appPort, err = tcpPort(app, s.appContainer); err != nil {
		return s, err
	}
	if reserved[s.appPort] {
		return s, fmt.Errorf("%w: the app port %d is one of outrider's own (15000, 15001, 15090); set %s", ErrBadInput, s.appPort, AnnotationAppPort)
	}
	if err := w.portsFree(); err != nil {
		return s, err
	}
	s.token = opts.AdminToken
	if s.token == "" {
		s.token = existingToken(w.pod, s.appContainer)
	}
	if s.token == "" {
		if s.token, err = newToken(opts.Rand); err != nil {
			return s, err
		}
	}
	return s, nil
}

// tcpPort is the first TCP port of the app container c, named name;
// defaultAppPort if it lists no port. A UDP or SCTP port is none that
// outrider's proxy or tcp probe can reach.
func tcpPort(c *yaml.Node, name string) (int, error) {
	ports := get(c, "ports")
	if ports == nil || len(ports.Content) == 0 {
		return defaultAppPort, nil
	}
	for _, p := range ports.Content {
		if proto := str(get(p, "protocol")); proto != "" && proto != "TCP" {
			continue
		}
		n, err := strconv.Atoi(str(get(p, "containerPort")))
		if err != nil {
			return 0, fmt.Errorf("%w: container %s: containerPort %q is not a number", ErrBadInput, name, str(get(p, "containerPort")))
		}
		return n, nil
	}
	return 0, fmt.Errorf("%w: container %s has no TCP port for outrider to front (its ports are UDP or SCTP); set %s", ErrBadInput, name, AnnotationAppPort)
}

var reserved = map[int]bool{adminPort: true, proxyPort: true, metricsPort: true}

// portsFree is an error when a container other than outrider has a TCP
// port of outrider's: the containers of a pod share its network, and one
// of the two would not start.
func (w *workload) portsFree() error {
	for c, p := range otherPorts(w.pod) {
		n, proto := int(atoi(str(get(p, "containerPort")))), str(get(p, "protocol"))
		if reserved[n] && (proto == "" || proto == "TCP") {
			return fmt.Errorf("%w: container %s has port %d, one of outrider's own (15000, 15001, 15090): both cannot listen on it in one pod", ErrBadInput, str(get(c, "name")), n)
		}
	}
	return nil
}

// appContainer is the named container, or the first that is not outrider.
func (w *workload) appContainer(name string) (*yaml.Node, error) {
	cs := get(w.pod, "containers")
	if cs == nil || cs.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%w: the pod has no containers", ErrBadInput)
	}
	var names []string
	for _, c := range cs.Content {
		n := str(get(c, "name"))
		if n == sidecarName {
			continue
		}
		if name == "" || n == name {
			return c, nil
		}
		names = append(names, n)
	}
	if name == "" {
		return nil, fmt.Errorf("%w: the pod has no container besides %s", ErrBadInput, sidecarName)
	}
	return nil, fmt.Errorf("%w: annotation %s: no container %q (the pod has %v)", ErrBadInput, AnnotationAppContainer, name, names)
}
