// Package servicename holds the one rule for a Consul service name that
// outrider accepts, shared by its configuration and its peer endpoint.
package servicename

import "regexp"

var pattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Valid reports whether s is a service name outrider registers or looks
// up: letters, digits, '-', '_' and '.', starting with a letter or digit,
// at most 253 characters (a DNS name, as Consul's DNS interface needs).
func Valid(s string) bool { return len(s) <= 253 && pattern.MatchString(s) }
