package inject

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"iter"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// outrider's listeners in an injected pod.
const (
	sidecarName = "outrider"
	proxyPort   = 15001
	metricsPort = 15090
	adminPort   = 15000
	// sidecarUID is the image's user and group (distroless nonroot); used
	// where neither the app container nor the pod names one (sidecarUser).
	sidecarUID = 65532
	// metricsPortName is the metrics port's name that the kubernetes scrape
	// job of docs/prometheus.md and the PodMonitor select.
	metricsPortName = "metrics"
	// metricsPortFallback names the metrics port when another container
	// already has a port named metrics: port names are unique in a pod, and
	// at most 15 characters ("outrider-metrics" has 16).
	metricsPortFallback = "outrider-metric"
)

// injectPod changes the pod spec; every change is an upsert, so running it
// on its own output changes nothing.
func injectPod(pod *yaml.Node, s settings) error {
	app, err := findContainer(sequence(pod, "containers"), s.appContainer)
	if err != nil {
		return err
	}
	if err := setPreStop(app, s); err != nil {
		return err
	}
	removeOtherPreStops(pod, app)
	// outrider reads the app's /proc entries. In the host's PID namespace
	// it sees them already, and the API server refuses
	// shareProcessNamespace there.
	if strings.EqualFold(str(get(pod, "hostPID")), "true") {
		del(pod, "shareProcessNamespace")
	} else {
		set(pod, "shareProcessNamespace", scalar("!!bool", "true"))
	}
	grace := atoi(str(get(pod, "terminationGracePeriodSeconds")))
	if grace < s.graceSeconds() {
		grace = s.graceSeconds()
		set(pod, "terminationGracePeriodSeconds", scalar("!!int", strconv.FormatInt(grace, 10)))
	}
	user, group, err := sidecarUser(pod, app, s.appContainer)
	if err != nil {
		return err
	}
	c := sidecar(s, grace, metricsPortNameIn(pod), user, group)
	keepUserFields(c, s.earlier)
	placeSidecar(pod, c)
	return checkPodResources(pod, c)
}

// sidecarUser is the user and group outrider runs as, nil where it inherits
// the pod's. Reading the app's /proc entries takes the app's user and group:
// the app container's where it names them, else the pod's, else (the pod
// naming no user) the image's 65532. Only the app container counts, as it
// runs the process outrider reads; a root user, the app's or the pod's, is
// not followed: outrider stays non-root.
func sidecarUser(pod, app *yaml.Node, appName string) (user, group *int64, err error) {
	sc := get(app, "securityContext")
	if user, err = runAs(sc, "runAsUser", appName); err != nil {
		return nil, nil, err
	}
	if group, err = runAs(sc, "runAsGroup", appName); err != nil {
		return nil, nil, err
	}
	if user != nil && *user == 0 {
		user, group = nil, nil
	}
	// The pod's user is inherited unless it is root, which the sidecar's
	// runAsNonRoot would refuse to start as.
	podSC := get(pod, "securityContext")
	podUser, podRoot := get(podSC, "runAsUser"), false
	if podUser != nil {
		podRoot = atoi(str(podUser)) == 0
	}
	if user == nil && (podUser == nil || podRoot) {
		uid := int64(sidecarUID)
		user = &uid
		if group == nil && (get(podSC, "runAsGroup") == nil || podRoot) {
			group = &uid
		}
	}
	return user, group, nil
}

// runAs is the id under key in a container's securityContext sc; nil when
// unset.
func runAs(sc *yaml.Node, key, container string) (*int64, error) {
	n := get(sc, key)
	if n == nil {
		return nil, nil
	}
	id := atoi(str(n))
	if id < 0 {
		return nil, fmt.Errorf("%w: container %s: securityContext.%s %q is not a user or group id (want a number from 0)", ErrBadInput, container, key, str(n))
	}
	return &id, nil
}

// otherPorts yields each port of each container and init container in
// pod but outrider's, with its container.
func otherPorts(pod *yaml.Node) iter.Seq2[*yaml.Node, *yaml.Node] {
	return func(yield func(c, port *yaml.Node) bool) {
		for _, key := range []string{"initContainers", "containers"} {
			cs := get(pod, key)
			if cs == nil {
				continue
			}
			for _, c := range cs.Content {
				ports := get(c, "ports")
				if str(get(c, "name")) == sidecarName || ports == nil {
					continue
				}
				for _, p := range ports.Content {
					if !yield(c, p) {
						return
					}
				}
			}
		}
	}
}

// metricsPortNameIn is the name of the sidecar's metrics port in pod:
// metrics, unless a container other than outrider has a port of that name.
func metricsPortNameIn(pod *yaml.Node) string {
	for _, p := range otherPorts(pod) {
		if str(get(p, "name")) == metricsPortName {
			return metricsPortFallback
		}
	}
	return metricsPortName
}

func atoi(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func findContainer(cs *yaml.Node, name string) (*yaml.Node, error) {
	for _, c := range cs.Content {
		if str(get(c, "name")) == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: no container %q", ErrBadInput, name)
}

// placeSidecar puts the sidecar first among the init containers (native)
// or last among the containers (classic), or where an earlier injection
// put it.
func placeSidecar(pod, c *yaml.Node) {
	want, other := "initContainers", "containers"
	if get(c, "restartPolicy") == nil {
		want, other = other, want
	}
	if list := get(pod, want); list != nil {
		for i, old := range list.Content {
			if str(get(old, "name")) == sidecarName {
				list.Content[i] = c
				removeSidecar(pod, other)
				return
			}
		}
	}
	removeSidecar(pod, other)
	list := sequence(pod, want)
	if want == "initContainers" {
		list.Content = append([]*yaml.Node{c}, list.Content...)
	} else {
		list.Content = append(list.Content, c)
	}
}

func removeSidecar(pod *yaml.Node, key string) {
	list := get(pod, key)
	if list == nil {
		return
	}
	kept := list.Content[:0]
	for _, c := range list.Content {
		if str(get(c, "name")) != sidecarName {
			kept = append(kept, c)
		}
	}
	list.Content = kept
	if len(kept) == 0 && key == "initContainers" {
		del(pod, key)
	}
}

// setPreStop makes the app container's preStop hook call outrider's
// /prestop, which answers once the drain is done.
func setPreStop(app *yaml.Node, s settings) error {
	lc := mapping(app, "lifecycle")
	if old := get(lc, "preStop"); old != nil && !isOurPreStop(old) {
		return fmt.Errorf("%w: container %s already has a preStop hook; outrider's drain needs it (remove the hook, or set %s: \"false\")",
			ErrBadInput, s.appContainer, AnnotationInject)
	}
	set(lc, "preStop", toNode(handler{HTTPGet: &httpGet{
		Path:    "/prestop",
		Port:    adminPort,
		Headers: []header{{Name: "Authorization", Value: "Bearer " + s.token}},
	}}))
	return nil
}

// removeOtherPreStops takes outrider's preStop hook off every container
// but app: one an earlier injection gave the container that was then the
// app (another outrider.io/app-container since) would send a stale token.
func removeOtherPreStops(pod, app *yaml.Node) {
	for _, c := range sequence(pod, "containers").Content {
		lc := get(c, "lifecycle")
		if c == app || !isOurPreStop(get(lc, "preStop")) {
			continue
		}
		del(lc, "preStop")
		if len(lc.Content) == 0 {
			del(c, "lifecycle")
		}
	}
}

func isOurPreStop(h *yaml.Node) bool {
	g := get(h, "httpGet")
	return str(get(g, "path")) == "/prestop" && str(get(g, "port")) == strconv.Itoa(adminPort)
}

// existingToken is the token an earlier injection put in the preStop hook:
// the app container's, else another container's (the app before the
// annotation named another).
func existingToken(pod *yaml.Node, app string) string {
	cs := sequence(pod, "containers").Content
	if c, err := findContainer(get(pod, "containers"), app); err == nil {
		cs = append([]*yaml.Node{c}, cs...)
	}
	for _, c := range cs {
		if t := hookToken(get(get(c, "lifecycle"), "preStop")); t != "" {
			return t
		}
	}
	return ""
}

// hookToken is the bearer token of h, if it is outrider's preStop hook.
func hookToken(h *yaml.Node) string {
	if !isOurPreStop(h) {
		return ""
	}
	headers := get(get(h, "httpGet"), "httpHeaders")
	if headers == nil {
		return ""
	}
	for _, hd := range headers.Content {
		if str(get(hd, "name")) == "Authorization" {
			return strings.TrimPrefix(str(get(hd, "value")), "Bearer ")
		}
	}
	return ""
}

// earlierSidecar is the sidecar an earlier injection added, nil if the
// pod has no container named outrider. One that the pod's
// AnnotationInjected does not mark as the injector's (nor the admin token
// it shares with the preStop hook, as injections before that annotation
// left it) is an error: it is the user's own container, or a hand-written
// sidecar, and replacing it would drop whatever it holds.
func (w *workload) earlierSidecar() (*yaml.Node, error) {
	var found *yaml.Node
	for _, key := range []string{"initContainers", "containers"} {
		cs := get(w.pod, key)
		if cs == nil {
			continue
		}
		for _, c := range cs.Content {
			if str(get(c, "name")) == sidecarName {
				found = c
			}
		}
	}
	if found == nil {
		return nil, nil
	}
	if w.annotation(AnnotationInjected) == "true" || tokenShared(w.pod, found) {
		return found, nil
	}
	return nil, fmt.Errorf("%w: the pod has a container named %s that outrider inject did not add (no %s annotation): "+
		"rename that container, or remove it to have inject add the sidecar", ErrBadInput, sidecarName, AnnotationInjected)
}

// tokenShared reports whether sidecar's literal OUTRIDER_ADMIN_TOKEN is
// the token of a container's outrider preStop hook: the mark of an
// injection made before AnnotationInjected was written.
func tokenShared(pod, sidecar *yaml.Node) bool {
	env, containers := get(sidecar, "env"), get(pod, "containers")
	if env == nil || containers == nil {
		return false
	}
	for _, e := range env.Content {
		if str(get(e, "name")) != "OUTRIDER_ADMIN_TOKEN" {
			continue
		}
		token := str(get(e, "value"))
		for _, c := range containers.Content {
			if token != "" && hookToken(get(get(c, "lifecycle"), "preStop")) == token {
				return true
			}
		}
	}
	return false
}

// markInjected writes AnnotationInjected on the pod template (or the Pod).
func (w *workload) markInjected() {
	w.podMeta = mapping(w.podMetaOf, "metadata")
	set(mapping(w.podMeta, "annotations"), AnnotationInjected, scalar("!!str", "true"))
}

// ownedFields are the sidecar's fields the injector writes: the fields of
// container. An earlier sidecar's other fields (envFrom, volumeMounts,
// args…) are the user's, and a new injection keeps them.
var ownedFields = func() map[string]bool {
	owned := map[string]bool{}
	t := reflect.TypeFor[container]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		owned[name] = true
	}
	return owned
}()

// keepUserFields copies into the new sidecar c what the user added to the
// earlier one: its fields the injector does not write, its environment
// variables the injector does not set (after the injector's, in their
// order), and its resources, which are the injector's defaults only until
// someone changes them.
func keepUserFields(c, earlier *yaml.Node) {
	if earlier == nil || earlier.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(earlier.Content); i += 2 {
		key, value := earlier.Content[i].Value, earlier.Content[i+1]
		if !ownedFields[key] || key == "resources" {
			set(c, key, value)
		}
	}
	env := sequence(c, "env")
	owned := map[string]bool{}
	for _, e := range env.Content {
		owned[str(get(e, "name"))] = true
	}
	for _, name := range optionalEnv {
		owned[name] = true
	}
	if old := get(earlier, "env"); old != nil {
		for _, e := range old.Content {
			if !owned[str(get(e, "name"))] {
				env.Content = append(env.Content, e)
			}
		}
	}
}

func newToken(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	b := make([]byte, 24)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("make an admin token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// The sidecar, in the field order of the Kubernetes API documentation.
type (
	container struct {
		Name            string          `yaml:"name"`
		Image           string          `yaml:"image"`
		RestartPolicy   string          `yaml:"restartPolicy,omitempty"`
		Env             []envVar        `yaml:"env"`
		Ports           []port          `yaml:"ports"`
		StartupProbe    *probe          `yaml:"startupProbe,omitempty"`
		LivenessProbe   *probe          `yaml:"livenessProbe"`
		ReadinessProbe  *probe          `yaml:"readinessProbe"`
		Resources       resources       `yaml:"resources"`
		SecurityContext securityContext `yaml:"securityContext"`
	}
	envVar struct {
		Name      string     `yaml:"name"`
		Value     string     `yaml:"value,omitempty"`
		ValueFrom *valueFrom `yaml:"valueFrom,omitempty"`
	}
	valueFrom struct {
		FieldRef     *fieldRef     `yaml:"fieldRef,omitempty"`
		SecretKeyRef *secretKeyRef `yaml:"secretKeyRef,omitempty"`
	}
	fieldRef struct {
		FieldPath string `yaml:"fieldPath"`
	}
	secretKeyRef struct {
		Name     string `yaml:"name"`
		Key      string `yaml:"key"`
		Optional bool   `yaml:"optional"`
	}
	port struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	}
	probe struct {
		HTTPGet          httpGet `yaml:"httpGet"`
		PeriodSeconds    int     `yaml:"periodSeconds"`
		FailureThreshold int     `yaml:"failureThreshold"`
	}
	handler struct {
		HTTPGet *httpGet `yaml:"httpGet"`
	}
	httpGet struct {
		Path    string   `yaml:"path"`
		Port    int      `yaml:"port"`
		Headers []header `yaml:"httpHeaders,omitempty"`
	}
	header struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	}
	resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	}
	securityContext struct {
		AllowPrivilegeEscalation bool         `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool         `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             bool         `yaml:"runAsNonRoot"`
		RunAsUser                *int64       `yaml:"runAsUser,omitempty"`
		RunAsGroup               *int64       `yaml:"runAsGroup,omitempty"`
		Capabilities             capabilities `yaml:"capabilities"`
		SeccompProfile           seccomp      `yaml:"seccompProfile"`
	}
	capabilities struct {
		Drop []string `yaml:"drop"`
	}
	seccomp struct {
		Type string `yaml:"type"`
	}
)

// optionalEnv are the variables the sidecar has only with some settings:
// they are the injector's too, and an earlier sidecar's are not kept.
var optionalEnv = []string{"OUTRIDER_PROBE"}

// sidecar is outrider's container for s in a pod with grace seconds to
// stop, its metrics port named metricsName, running as user and group
// (nil: the pod's).
func sidecar(s settings, grace int64, metricsName string, user, group *int64) *yaml.Node {
	field := func(name, path string) envVar {
		return envVar{Name: name, ValueFrom: &valueFrom{FieldRef: &fieldRef{FieldPath: path}}}
	}
	env := []envVar{
		field("POD_NAME", "metadata.name"),
		field("POD_NAMESPACE", "metadata.namespace"),
		field("POD_IP", "status.podIP"),
		// The node's Consul client agent is at HOST_IP, port 8500.
		field("HOST_IP", "status.hostIP"),
		{Name: "CONSUL_HTTP_TOKEN", ValueFrom: &valueFrom{SecretKeyRef: &secretKeyRef{Name: s.consulSecret, Key: "token", Optional: true}}},
		{Name: "OUTRIDER_SERVICE_NAME", Value: s.service},
		{Name: "OUTRIDER_SERVICE_ID", Value: "$(POD_NAME)"},
		{Name: "OUTRIDER_SERVICE_META", Value: "k8s_namespace=$(POD_NAMESPACE),k8s_pod=$(POD_NAME)"},
		{Name: "OUTRIDER_APP_ADDR", Value: "127.0.0.1:" + strconv.Itoa(s.appPort)},
	}
	if s.probe != "" {
		env = append(env, envVar{Name: optionalEnv[0], Value: s.probe})
	}
	env = append(env,
		envVar{Name: "OUTRIDER_PROXY_LISTEN", Value: ":" + strconv.Itoa(proxyPort)},
		// Its default, set so that the service link of a Service named
		// outrider (OUTRIDER_SERVICE_PORT, which the kubelet sets unless the
		// container does) cannot change the port registered in Consul.
		envVar{Name: "OUTRIDER_SERVICE_PORT", Value: strconv.Itoa(proxyPort)},
		envVar{Name: "OUTRIDER_METRICS_LISTEN", Value: ":" + strconv.Itoa(metricsPort)},
		envVar{Name: "OUTRIDER_ADMIN_LISTEN", Value: ":" + strconv.Itoa(adminPort)},
		envVar{Name: "OUTRIDER_ADMIN_TOKEN", Value: s.token},
		envVar{Name: "OUTRIDER_DRAIN_DELAY", Value: s.drainDelay.String()},
		envVar{Name: "OUTRIDER_DRAIN_TIMEOUT", Value: s.drainTimeout.String()},
		envVar{Name: "OUTRIDER_GRACE_PERIOD", Value: strconv.FormatInt(grace, 10) + "s"},
	)
	c := container{
		Name:  sidecarName,
		Image: s.image,
		Env:   env,
		Ports: []port{
			{Name: "outrider-proxy", ContainerPort: proxyPort, Protocol: "TCP"},
			{Name: metricsName, ContainerPort: metricsPort, Protocol: "TCP"},
			{Name: "outrider-admin", ContainerPort: adminPort, Protocol: "TCP"},
		},
		LivenessProbe:  &probe{HTTPGet: httpGet{Path: "/healthz", Port: metricsPort}, PeriodSeconds: 10, FailureThreshold: 3},
		ReadinessProbe: &probe{HTTPGet: httpGet{Path: "/ready", Port: metricsPort}, PeriodSeconds: 2, FailureThreshold: 1},
		// The proxy's automatic connection bound follows the memory
		// limit: 3,584 client connections at 128Mi (docs/proxy.md#overload).
		Resources: resources{
			Requests: map[string]string{"cpu": "50m", "memory": "32Mi"},
			Limits:   map[string]string{"memory": "128Mi"},
		},
		SecurityContext: securityContext{
			ReadOnlyRootFilesystem: true,
			RunAsNonRoot:           true,
			RunAsUser:              user,
			RunAsGroup:             group,
			Capabilities:           capabilities{Drop: []string{"ALL"}},
			SeccompProfile:         seccomp{Type: "RuntimeDefault"},
		},
	}
	if s.native {
		c.RestartPolicy = "Always"
		// The app starts once outrider answers.
		c.StartupProbe = &probe{HTTPGet: httpGet{Path: "/healthz", Port: metricsPort}, PeriodSeconds: 1, FailureThreshold: 30}
	}
	return toNode(c)
}
