package podrunner

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// containerEnv returns the environment of container c of pod, as the
// kubelet builds it: the image's variables, then the container's envFrom
// and env in order, with $(VAR) references expanded and downward-API
// fields filled in from the pod (whose status.podIP must already be set).
func containerEnv(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, image []string) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(name, value string) {
		if _, ok := vars[name]; !ok {
			order = append(order, name)
		}
		vars[name] = value
	}
	for _, kv := range image {
		name, value, _ := strings.Cut(kv, "=")
		set(name, value)
	}
	set("HOSTNAME", pod.Name)
	for _, from := range c.EnvFrom {
		data, err := envFromSource(ctx, client, pod.Namespace, from)
		if err != nil {
			return nil, fmt.Errorf("container %q envFrom: %w", c.Name, err)
		}
		for k, v := range data {
			set(from.Prefix+k, v)
		}
	}
	// Only variables defined before the one being expanded can be
	// referenced, as in the kubelet.
	for _, e := range c.Env {
		value := e.Value
		if e.ValueFrom != nil {
			v, err := envValueFrom(ctx, client, pod, c, e.ValueFrom)
			if err != nil {
				return nil, fmt.Errorf("container %q env %s: %w", c.Name, e.Name, err)
			}
			value = v
		} else {
			value = expand(value, vars)
		}
		set(e.Name, value)
	}
	env := make([]string, 0, len(order))
	for _, name := range order {
		env = append(env, name+"="+vars[name])
	}
	return env, nil
}

func envValueFrom(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, src *corev1.EnvVarSource) (string, error) {
	switch {
	case src.FieldRef != nil:
		return podField(pod, src.FieldRef.FieldPath)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return optional(ref.Optional, fmt.Errorf("secret %q: %w", ref.Name, err))
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			return optional(ref.Optional, fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key))
		}
		return string(v), nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		m, err := client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return optional(ref.Optional, fmt.Errorf("configmap %q: %w", ref.Name, err))
		}
		v, ok := m.Data[ref.Key]
		if !ok {
			return optional(ref.Optional, fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key))
		}
		return v, nil
	case src.ResourceFieldRef != nil:
		return "", fmt.Errorf("resourceFieldRef %q is not supported by podrunner", src.ResourceFieldRef.Resource)
	}
	return "", fmt.Errorf("valueFrom has no source podrunner supports")
}

func envFromSource(ctx context.Context, client kubernetes.Interface, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	switch {
	case from.ConfigMapRef != nil:
		m, err := client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			_, err = optional(from.ConfigMapRef.Optional, fmt.Errorf("configmap %q: %w", from.ConfigMapRef.Name, err))
			return nil, err
		}
		return m.Data, nil
	case from.SecretRef != nil:
		s, err := client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			_, err = optional(from.SecretRef.Optional, fmt.Errorf("secret %q: %w", from.SecretRef.Name, err))
			return nil, err
		}
		data := map[string]string{}
		for k, v := range s.Data {
			data[k] = string(v)
		}
		return data, nil
	}
	return nil, fmt.Errorf("envFrom has no source podrunner supports")
}

func optional(opt *bool, err error) (string, error) {
	if opt != nil && *opt {
		return "", nil
	}
	return "", err
}

// podField resolves a downward-API fieldPath against pod.
func podField(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIPs":
		return joinIPs(pod.Status.HostIPs), nil
	case "status.podIPs":
		var ips []string
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	}
	for prefix, m := range map[string]map[string]string{
		"metadata.labels":      pod.Labels,
		"metadata.annotations": pod.Annotations,
	} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok {
			if key, ok = strings.CutSuffix(key, "']"); ok {
				return m[key], nil
			}
		}
	}
	return "", fmt.Errorf("fieldPath %q is not supported by podrunner", path)
}

func joinIPs(ips []corev1.HostIP) string {
	var s []string
	for _, ip := range ips {
		s = append(s, ip.IP)
	}
	return strings.Join(s, ",")
}

// expand replaces each $(NAME) in s with the value of a defined variable,
// turns $$ into $, and leaves references to undefined variables as they
// are: Kubernetes' rules for env values, command and args.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; {
		case next == '$':
			b.WriteByte('$')
			i++
		case next == '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// envMap turns KEY=VALUE pairs into a map for expand.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}
