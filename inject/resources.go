package inject

import (
	"fmt"
	"maps"
	"math/big"
	"regexp"
	"slices"

	"go.yaml.in/yaml/v3"
)

// checkPodResources is an error when the pod sets pod-level resources
// (spec.resources, Kubernetes 1.32 and later) that its containers, the
// sidecar among them, do not fit: the API server refuses a pod whose
// containers request more than the pod, or whose regular container has a
// higher limit than the pod. A native sidecar is an init container, whose
// limit the API server does not hold against the pod's: the pod's limit
// caps it. sidecar is outrider's container as placed in the pod. The pod's
// budget is the user's to raise; inject does not change it.
func checkPodResources(pod, sidecar *yaml.Node) error {
	res := get(pod, "resources")
	if res == nil {
		return nil
	}
	podReq, podLim := get(res, "requests"), get(res, "limits")
	aggr := aggregateRequests(pod)
	for _, name := range slices.Sorted(maps.Keys(aggr)) {
		have, field := get(podReq, name), "requests"
		if have == nil {
			// An unset pod request defaults to the containers' sum, which
			// may not pass the pod's limit.
			have, field = get(podLim, name), "limits"
		}
		budget, ok := parseQuantity(str(have))
		if !ok || budget.Cmp(aggr[name]) >= 0 {
			continue
		}
		return fmt.Errorf("%w: the pod's resources.%s.%s is %s, less than what its containers request with outrider's sidecar (%s): "+
			"the API server would refuse the pod; raise it to at least that, or lower the app's requests",
			ErrBadInput, field, name, str(have), formatQuantity(name, aggr[name]))
	}
	if get(sidecar, "restartPolicy") != nil {
		return nil
	}
	for name, lim := range mapOf(get(get(sidecar, "resources"), "limits")) {
		budget, ok1 := parseQuantity(str(get(podLim, name)))
		want, ok2 := parseQuantity(lim)
		if ok1 && ok2 && want.Cmp(budget) > 0 {
			return fmt.Errorf("%w: the pod's resources.limits.%s is %s, less than outrider's sidecar's limit (%s): "+
				"the API server would refuse the pod; raise it",
				ErrBadInput, name, str(get(podLim, name)), lim)
		}
	}
	return nil
}

// aggregateRequests is what the pod's containers request together, as the
// API server counts it against the pod's requests: the containers and the
// native sidecars, or more while an init container runs beside the
// sidecars started before it. A container without a request has its
// limit's.
func aggregateRequests(pod *yaml.Node) map[string]*big.Rat {
	total, sidecars, init := map[string]*big.Rat{}, map[string]*big.Rat{}, map[string]*big.Rat{}
	add := func(to, q map[string]*big.Rat) {
		for k, v := range q {
			if to[k] == nil {
				to[k] = new(big.Rat)
			}
			to[k].Add(to[k], v)
		}
	}
	atLeast := func(to, q map[string]*big.Rat) {
		for k, v := range q {
			if to[k] == nil || to[k].Cmp(v) < 0 {
				to[k] = new(big.Rat).Set(v)
			}
		}
	}
	if cs := get(pod, "containers"); cs != nil {
		for _, c := range cs.Content {
			add(total, requestsOf(c))
		}
	}
	if cs := get(pod, "initContainers"); cs != nil {
		for _, c := range cs.Content {
			req := requestsOf(c)
			if str(get(c, "restartPolicy")) == "Always" {
				add(total, req)
				add(sidecars, req)
				atLeast(init, sidecars)
				continue
			}
			running := map[string]*big.Rat{}
			add(running, sidecars)
			add(running, req)
			atLeast(init, running)
		}
	}
	atLeast(total, init)
	return total
}

// requestsOf is container c's requests, a limit standing for a missing
// request as the API server defaults it; values it cannot read are left
// out.
func requestsOf(c *yaml.Node) map[string]*big.Rat {
	res := get(c, "resources")
	out := map[string]*big.Rat{}
	for _, from := range []map[string]string{mapOf(get(res, "limits")), mapOf(get(res, "requests"))} {
		for k, v := range from {
			if q, ok := parseQuantity(v); ok {
				out[k] = q
			}
		}
	}
	return out
}

// mapOf is the mapping n's scalar values by key.
func mapOf(n *yaml.Node) map[string]string {
	out := map[string]string{}
	if n == nil || n.Kind != yaml.MappingNode {
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		out[n.Content[i].Value] = str(n.Content[i+1])
	}
	return out
}

var quantity = regexp.MustCompile(`^([+-]?[0-9]*\.?[0-9]*)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$`)

var quantitySuffix = map[string]*big.Rat{
	"": big.NewRat(1, 1), "n": big.NewRat(1, 1e9), "u": big.NewRat(1, 1e6), "m": big.NewRat(1, 1e3),
	"k": big.NewRat(1e3, 1), "M": big.NewRat(1e6, 1), "G": big.NewRat(1e9, 1), "T": big.NewRat(1e12, 1),
	"P": big.NewRat(1e15, 1), "E": big.NewRat(1e18, 1),
	"Ki": big.NewRat(1<<10, 1), "Mi": big.NewRat(1<<20, 1), "Gi": big.NewRat(1<<30, 1), "Ti": big.NewRat(1<<40, 1),
	"Pi": big.NewRat(1<<50, 1), "Ei": big.NewRat(1<<60, 1),
}

// parseQuantity reads a Kubernetes quantity (100m, 0.5, 128Mi, 1e3).
func parseQuantity(s string) (*big.Rat, bool) {
	m := quantity.FindStringSubmatch(s)
	if m == nil || m[1] == "" || m[1] == "." || m[1] == "+" || m[1] == "-" {
		return nil, false
	}
	q, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return nil, false
	}
	if mult, ok := quantitySuffix[m[2]]; ok {
		return q.Mul(q, mult), true
	}
	exp, ok := new(big.Rat).SetString("1" + m[2]) // 1e3
	if !ok {
		return nil, false
	}
	return q.Mul(q, exp), true
}

// formatQuantity writes q for resource name: CPU in millicores, whole
// mebibytes where q is some, else a number.
func formatQuantity(name string, q *big.Rat) string {
	if name == "cpu" {
		milli := new(big.Rat).Mul(q, big.NewRat(1000, 1))
		return new(big.Int).Quo(new(big.Int).Add(milli.Num(), new(big.Int).Sub(milli.Denom(), big.NewInt(1))), milli.Denom()).String() + "m"
	}
	mi := new(big.Rat).Quo(q, big.NewRat(1<<20, 1))
	if mi.IsInt() {
		return mi.Num().String() + "Mi"
	}
	return q.FloatString(0)
}
