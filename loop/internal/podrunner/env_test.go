package podrunner

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_IP": "127.0.1.7", "EMPTY": ""}
	tests := []struct{ name, in, want string }{
		{name: "reference", in: "$(POD_IP):8080", want: "127.0.1.7:8080"},
		{name: "twice", in: "$(POD_IP)-$(POD_IP)", want: "127.0.1.7-127.0.1.7"},
		{name: "empty value", in: "a$(EMPTY)b", want: "ab"},
		{name: "undefined stays", in: "$(NOPE):1", want: "$(NOPE):1"},
		{name: "escaped", in: "$$(POD_IP)", want: "$(POD_IP)"},
		{name: "double dollar", in: "a$$b", want: "a$b"},
		{name: "lone dollar", in: "cost $5 $", want: "cost $5 $"},
		{name: "unclosed", in: "$(POD_IP", want: "$(POD_IP"},
		{name: "empty name", in: "$()", want: "$()"},
		{name: "shell syntax untouched", in: "${POD_IP} $POD_IP", want: "${POD_IP} $POD_IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expand(tt.in, vars); got != tt.want {
				t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestContainerEnv(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-1", Namespace: "shop", UID: "u-1",
			Labels:      map[string]string{"app": "web"},
			Annotations: map[string]string{"team": "a"},
		},
		Spec:   corev1.PodSpec{NodeName: "podrunner", ServiceAccountName: "default"},
		Status: corev1.PodStatus{PodIP: "127.0.1.3", PodIPs: []corev1.PodIP{{IP: "127.0.1.3"}}, HostIP: "127.0.0.1"},
	}
	client := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "admin", Namespace: "shop"}, Data: map[string][]byte{"token": []byte("s3cret")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "shop"}, Data: map[string]string{"LEVEL": "debug", "MODE": "x"}},
	)
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	yes := true
	c := &corev1.Container{
		Name:    "app",
		EnvFrom: []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		Env: []corev1.EnvVar{
			field("POD_NAME", "metadata.name"),
			field("POD_NAMESPACE", "metadata.namespace"),
			field("POD_UID", "metadata.uid"),
			field("POD_IP", "status.podIP"),
			field("POD_IPS", "status.podIPs"),
			field("HOST_IP", "status.hostIP"),
			field("NODE", "spec.nodeName"),
			field("SA", "spec.serviceAccountName"),
			field("APP", "metadata.labels['app']"),
			field("TEAM", "metadata.annotations['team']"),
			{Name: "LISTEN", Value: "$(POD_IP):15000"},
			{Name: "LATER", Value: "$(DEFINED_LATER)"},
			{Name: "DEFINED_LATER", Value: "x"},
			{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "admin"}, Key: "token"}}},
			{Name: "MISSING_OK", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k", Optional: &yes}}},
			{Name: "IMAGE_VAR", Value: "overridden"},
		},
	}
	env, err := containerEnv(context.Background(), client, pod, c, []string{"PATH=/bin", "IMAGE_VAR=image"})
	if err != nil {
		t.Fatal(err)
	}
	got := envMap(env)
	want := map[string]string{
		"PATH": "/bin", "HOSTNAME": "web-1", "IMAGE_VAR": "overridden",
		"CFG_LEVEL": "debug", "CFG_MODE": "x",
		"POD_NAME": "web-1", "POD_NAMESPACE": "shop", "POD_UID": "u-1", "POD_IP": "127.0.1.3",
		"POD_IPS": "127.0.1.3", "HOST_IP": "127.0.0.1", "NODE": "podrunner", "SA": "default",
		"APP": "web", "TEAM": "a", "LISTEN": "127.0.1.3:15000",
		"LATER": "$(DEFINED_LATER)", "DEFINED_LATER": "x", "TOKEN": "s3cret", "MISSING_OK": "",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("env has %d variables, want %d: %q", len(got), len(want), env)
	}
}

func TestContainerEnvErrors(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"}}
	tests := []struct {
		name    string
		env     corev1.EnvVar
		wantErr string
	}{
		{name: "unsupported field",
			env:     corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.hostname"}}},
			wantErr: `container "app" env X: fieldPath "spec.hostname" is not supported by podrunner`},
		{name: "missing secret",
			env: corev1.EnvVar{Name: "T", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "admin"}, Key: "token"}}},
			wantErr: `container "app" env T: secret "admin"`},
		{name: "resource field",
			env:     corev1.EnvVar{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			wantErr: `container "app" env CPU: resourceFieldRef "limits.cpu" is not supported by podrunner`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &corev1.Container{Name: "app", Env: []corev1.EnvVar{tt.env}}
			_, err := containerEnv(context.Background(), fake.NewClientset(), pod, c, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
