package proxy

// popLast removes the last element of *s and returns it, clearing its
// slot so that the backing array holds no reference to it; false when *s
// is empty. The idle lists hand out the one that went idle last.
func popLast[T any](s *[]T) (T, bool) {
	var zero T
	n := len(*s)
	if n == 0 {
		return zero, false
	}
	v := (*s)[n-1]
	(*s)[n-1] = zero
	*s = (*s)[:n-1]
	return v, true
}
