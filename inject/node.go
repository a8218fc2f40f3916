package inject

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// get is the value of key in the mapping m (or the mapping m is an alias
// of); nil when m is no mapping or has no such key.
func get(m *yaml.Node, key string) *yaml.Node {
	if m != nil && m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// str is a scalar's value, "" for anything else.
func str(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// set puts value under key in m, in place when the key exists, else last.
func set(m *yaml.Node, key string, value *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = value
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, value)
}

// mapping is the mapping under key in m, made when missing. An alias of
// a mapping is replaced by a copy of it, so that what the caller adds
// goes here alone, not to the anchor's mapping, and nothing the alias
// held is lost.
func mapping(m *yaml.Node, key string) *yaml.Node {
	n := get(m, key)
	switch {
	case n != nil && n.Kind == yaml.MappingNode:
		return n
	case n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && n.Alias.Kind == yaml.MappingNode:
		n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: append([]*yaml.Node(nil), n.Alias.Content...)}
	default:
		n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	set(m, key, n)
	return n
}

// sequence is the sequence under key in m, made when missing.
func sequence(m *yaml.Node, key string) *yaml.Node {
	if n := get(m, key); n != nil && n.Kind == yaml.SequenceNode {
		return n
	}
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	set(m, key, n)
	return n
}

// del removes key from m.
func del(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func scalar(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}

// toNode encodes v (structs with yaml tags keep their field order).
func toNode(v any) *yaml.Node {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		panic("inject: encode a literal: " + err.Error()) // only fixed Go values are encoded
	}
	return &n
}

// mergeKey is the first YAML merge key (<<) among the keys of the mapping
// n, or with deep anywhere under n; nil if none. get does not follow merge
// keys: what a merge gives a mapping is not seen, and kubectl's parser lets
// the later of a merge and a key beside it win.
func mergeKey(n *yaml.Node, deep bool) *yaml.Node {
	seen := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node) *yaml.Node
	walk = func(n *yaml.Node) *yaml.Node {
		if n != nil && n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n == nil || seen[n] {
			return nil
		}
		seen[n] = true
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 {
				if c.Kind == yaml.ScalarNode && c.ShortTag() == "!!merge" {
					return c
				}
			} else if deep {
				if m := walk(c); m != nil {
					return m
				}
			}
		}
		return nil
	}
	return walk(n)
}

// unshare makes the pod spec pod, in the document root, the only holder
// of what inject changes in it: each alias in root that names pod, a node
// in it or a node around it, and each alias inside pod, becomes a copy of
// the node it names. Otherwise outrider's preStop hook written into an
// app's anchored lifecycle would reach every container and workload that
// aliases it, and the hook taken off them would take theirs. Copies of
// more than maxCopied nodes in all are an error: aliases of aliases can
// name exponentially many (a "billion laughs" document).
func unshare(root, pod *yaml.Node) error {
	in := map[*yaml.Node]bool{}
	var mark func(n *yaml.Node)
	mark = func(n *yaml.Node) {
		if n == nil || n.Kind == yaml.AliasNode || in[n] {
			return
		}
		in[n] = true
		for _, c := range n.Content {
			mark(c)
		}
	}
	mark(pod)
	var holds func(n *yaml.Node) bool // n is pod or has it inside
	holds = func(n *yaml.Node) bool {
		if n == pod {
			return true
		}
		for _, c := range n.Content {
			if c.Kind != yaml.AliasNode && holds(c) {
				return true
			}
		}
		return false
	}
	budget := maxCopied
	var walk func(n *yaml.Node, inside bool) error
	walk = func(n *yaml.Node, inside bool) error {
		for i, c := range n.Content {
			if c.Kind == yaml.AliasNode && c.Alias != nil && (inside || in[c.Alias] || holds(c.Alias)) {
				cp, err := copyNode(c.Alias, &budget)
				if err != nil {
					return err
				}
				n.Content[i] = cp
				continue
			}
			if err := walk(c, inside || c == pod); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(root, root == pod)
}

// maxCopied bounds the nodes unshare writes out: far above what a
// pod spec's aliases name.
const maxCopied = 100_000

// copyNode is a deep copy of n with its aliases written out and no anchor,
// taking one from budget for each node; an error once budget is spent.
func copyNode(n *yaml.Node, budget *int) (*yaml.Node, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return copyNode(n.Alias, budget)
	}
	if *budget--; *budget < 0 {
		return nil, fmt.Errorf("%w: the aliases of the pod spec expand to more than %d nodes: write the values out, or alias fewer of them", ErrBadInput, maxCopied)
	}
	c := *n
	c.Anchor = ""
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, child := range n.Content {
		cc, err := copyNode(child, budget)
		if err != nil {
			return nil, err
		}
		c.Content[i] = cc
	}
	return &c, nil
}
