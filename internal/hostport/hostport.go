// Package hostport recognises the IPv6 address written without brackets
// where a host:port is wanted, so that each place that reads one can say
// what is wrong instead of "too many colons".
package hostport

import (
	"net/netip"
	"strings"
)

// BareIPv6 reports whether s is an IPv6 address, or one followed by
// ":port", without the brackets that host:port needs around it: "::1",
// "::1:8080" or "fd00::7:8080" (which could be [fd00::7]:8080 or
// fd00::7:8080 without a port, hence the brackets).
func BareIPv6(s string) bool {
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") < 2 {
		return false
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
		return true
	}
	i := strings.LastIndexByte(s, ':')
	host, port := s[:i], s[i+1:]
	a, err := netip.ParseAddr(host)
	return err == nil && a.Is6() && port != "" && strings.Trim(port, "0123456789") == ""
}
