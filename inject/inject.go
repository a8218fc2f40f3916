// Package inject adds outrider as a sidecar to Kubernetes workloads in YAML,
// offline, like `linkerd inject`: Deployments, StatefulSets, DaemonSets,
// ReplicaSets, Pods and PodTemplates, alone or as items of a List, whose
// pod template asks for it with the annotation
// outrider.io/inject: "true" get the sidecar, its environment, the app's
// preStop hook and shareProcessNamespace. Every other document is copied
// byte for byte; an injected document keeps its comments and key order but
// is re-indented. Injecting twice changes nothing; injecting again keeps
// what the user added to the sidecar.
//
// It works on yaml.v3 nodes rather than on k8s.io/api types: a round trip
// through the API types would drop comments, reorder keys, add empty fields
// and lose fields of API versions newer than the types, and would pull
// Kubernetes' client libraries into the outrider binary.
package inject

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrBadInput marks input that is not YAML, or a workload that cannot be
// injected as it is; the command exits 2 on it.
var ErrBadInput = errors.New("bad input")

// Options are the injector's settings that do not come from annotations.
type Options struct {
	// All injects every supported workload whose annotation does not say
	// "false", as if each had outrider.io/inject: "true".
	All bool
	// Image is the sidecar's image unless outrider.io/image names one.
	// Empty: keep the image of an earlier injection, or DefaultImage.
	Image string
	// AdminToken is the admin listener's bearer token. Empty: keep the
	// token of an earlier injection, or make a random one.
	AdminToken string
	// Rand is the source of new tokens (crypto/rand in the command).
	Rand io.Reader
}

// Result says what happened to one object.
type Result struct {
	Kind, Name string
	Injected   bool
	Reason     string   // why it was not injected
	Warnings   []string // what the injected pod may meet
}

// Stream injects every document of in, named name in errors, and writes the
// stream to out.
func Stream(name string, in []byte, out io.Writer, opts Options) ([]Result, error) {
	var results []Result
	var buf bytes.Buffer
	line := 1 // where the document starts in the input
	for i, doc := range splitDocuments(in) {
		res, text, err := document(doc, line, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i+1, err)
		}
		line += bytes.Count(doc, []byte("\n"))
		results = append(results, res...)
		buf.Write(text)
	}
	_, err := out.Write(buf.Bytes())
	return results, err
}

// splitDocuments cuts a YAML stream before each "---" line, keeping every
// byte: the pieces joined are the input.
func splitDocuments(in []byte) [][]byte {
	var docs [][]byte
	start := 0
	for off := 0; off < len(in); {
		end := bytes.IndexByte(in[off:], '\n')
		next := len(in)
		if end >= 0 {
			next = off + end + 1
		}
		line := in[off:next]
		if off > start && isDocStart(line) {
			docs = append(docs, in[start:off])
			start = off
		}
		off = next
	}
	return append(docs, in[start:])
}

func isDocStart(line []byte) bool {
	l := strings.TrimRight(string(line), "\r\n")
	return l == "---" || strings.HasPrefix(l, "--- ") || strings.HasPrefix(l, "---\t")
}

var errLine = regexp.MustCompile(`^yaml: line (\d+):`)

// document injects one document, which starts on line first of the input;
// text is what to write in its place. A List (what `kubectl get -o yaml`
// prints for several objects) is injected item by item.
func document(doc []byte, first int, opts Options) ([]Result, []byte, error) {
	var root yaml.Node
	err := yaml.Unmarshal(doc, &root)
	if err != nil {
		// yaml counts lines from the document's start; say the input's line.
		msg := errLine.ReplaceAllStringFunc(err.Error(), func(m string) string {
			n, _ := strconv.Atoi(errLine.FindStringSubmatch(m)[1])
			return fmt.Sprintf("yaml: line %d:", first+n-1)
		})
		return nil, nil, fmt.Errorf("%w: %s", ErrBadInput, msg)
	}
	if root.Kind == 0 || len(root.Content) == 0 || root.Content[0].Tag == "!!null" {
		return nil, doc, nil // comments or nothing
	}
	obj := root.Content[0]
	if obj.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%w: not a Kubernetes object (a YAML mapping with kind and metadata)", ErrBadInput)
	}
	objs := []*yaml.Node{obj}
	if items := get(obj, "items"); strings.HasSuffix(str(get(obj, "kind")), "List") && items != nil && items.Kind == yaml.SequenceNode {
		objs = items.Content
	}
	var results []Result
	injected := false
	for _, o := range objs {
		res, err := object(obj, o, first, opts)
		if err != nil {
			return nil, nil, err
		}
		results = append(results, res)
		injected = injected || res.Injected
	}
	if !injected {
		return results, doc, nil
	}
	text, err := encode(doc, &root)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", results[0].Kind, results[0].Name, err)
	}
	return results, text, nil
}

// object injects obj in place when it is a workload that asks for it; obj
// is in the document root, which starts on line first of the input.
func object(root, obj *yaml.Node, first int, opts Options) (Result, error) {
	kind, name := str(get(obj, "kind")), str(get(get(obj, "metadata"), "name"))
	if name == "" {
		name = str(get(get(obj, "metadata"), "generateName")) + "*" // the API server completes it
	}
	res := Result{Kind: kind, Name: name}
	w := workloadOf(obj)
	if w == nil {
		res.Reason = "kind " + kind + " is not injected (only Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod and PodTemplate are, alone or as items of a List)"
		return res, nil
	}
	want, why, err := w.wanted(opts.All)
	if err != nil {
		return Result{}, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	if !want {
		if m := w.annotationsMerge(); m != nil && w.annotation(AnnotationInject) == "" {
			return Result{}, fmt.Errorf("%s %s: %w: line %d: the annotations use a YAML merge key (<<), which inject does not follow, "+
				"so it cannot tell whether %s is among them; write the merged keys out (yq 'explode(.)' does) and inject again",
				kind, name, ErrBadInput, first+m.Line-1, AnnotationInject)
		}
		res.Reason = why
		return res, nil
	}
	m := mergeKey(w.podMetaOf, true)
	if m == nil {
		m = w.annotationsMerge()
	}
	if m != nil {
		return Result{}, fmt.Errorf("%s %s: %w: line %d: a YAML merge key (<<) in the pod or its metadata, which inject does not follow: "+
			"it would not see what the merge gives (a preStop hook, a port, a label), and kubectl might let the merge win over what inject adds; "+
			"write the merged keys out (yq 'explode(.)' does) and inject again", kind, name, ErrBadInput, first+m.Line-1)
	}
	s, err := w.settings(opts)
	if err != nil {
		return Result{}, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	if err := unshare(root, w.pod); err != nil {
		return Result{}, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	if err := injectPod(w.pod, s); err != nil {
		return Result{}, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	w.markInjected()
	res.Injected = true
	if strings.EqualFold(str(get(w.pod, "hostNetwork")), "true") {
		res.Warnings = append(res.Warnings, hostNetworkWarning)
	}
	if strings.HasPrefix(s.probe, "exec:") {
		res.Warnings = append(res.Warnings, execProbeWarning)
	}
	return res, nil
}

// hostNetworkWarning is what an injected pod on the node's network meets.
var hostNetworkWarning = fmt.Sprintf("hostNetwork: the sidecar's ports %d, %d and %d are the node's: "+
	"one injected hostNetwork pod per node, across all workloads, and the admin listener "+
	"(token-protected) is on the node's addresses", adminPort, proxyPort, metricsPort)

// execProbeWarning is what an exec probe meets in the sidecar.
var execProbeWarning = AnnotationProbe + ": an exec probe runs its command in the sidecar's container, " +
	"not the app's, and outrider's image has no shell or tools: probe over http, tcp or grpc, " +
	"or build an image with the command in it"

// encode writes root with two-space indentation, keeping the document's
// "---" line when it had one.
func encode(orig []byte, root *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	if first, _, _ := bytes.Cut(orig, []byte("\n")); isDocStart(append(first, '\n')) {
		b.WriteString("---\n")
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b.Bytes(), nil
}
