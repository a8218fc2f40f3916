package proxy

import (
	"bytes"
	"errors"
)

// A headError is a malformed or refused message head: the status the proxy
// answers with and a short reason for the body and the log.
type headError struct {
	code   int
	reason string
}

func (e *headError) Error() string { return e.reason }

// Errors of the head parsers. A request error is answered with its code and
// the connection is closed; a response error becomes a 502.
var (
	errNeedMore        = errors.New("incomplete head")
	errHeadTooLarge    = &headError{431, "request header fields too large"}
	errTooManyFields   = &headError{431, "too many header fields"}
	errBadRequestLine  = &headError{400, "malformed request line"}
	errBadMethod       = &headError{400, "malformed method"}
	errBadTarget       = &headError{400, "malformed request target"}
	errBadVersion      = &headError{505, "HTTP version not supported"}
	errBareCR          = &headError{400, "bare CR in head"}
	errObsFold         = &headError{400, "obsolete line folding"}
	errBadFieldName    = &headError{400, "malformed header field name"}
	errBadFieldValue   = &headError{400, "malformed header field value"}
	errNoHost          = &headError{400, "missing Host header"}
	errManyHosts       = &headError{400, "more than one Host header"}
	errBadLength       = &headError{400, "malformed Content-Length"}
	errLengthMismatch  = &headError{400, "differing Content-Length values"}
	errLengthAndChunk  = &headError{400, "both Content-Length and Transfer-Encoding"}
	errBadCoding       = &headError{400, "Transfer-Encoding other than chunked"}
	errManyCodings     = &headError{400, "more than one Transfer-Encoding header"}
	errBadStatusLine   = &headError{502, "malformed status line from the app"}
	errBadChunk        = &headError{400, "malformed chunk"}
	errChunkLineTooBig = &headError{400, "chunk line too long"}
)

// Method classes: the label values of outrider_http_requests_total's method.
const (
	methodGET = iota
	methodHEAD
	methodPOST
	methodPUT
	methodDELETE
	methodCONNECT
	methodOPTIONS
	methodTRACE
	methodPATCH
	methodOTHER
	numMethods
)

var methodNames = [numMethods]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"}

// idempotent reports whether a request of method class m may be sent to
// the app again after it may have reached it (RFC 9110 9.2.2): a proxy
// must not resend the others (RFC 9112 9.3.1), as the app may have acted
// on them already. OTHER is not known to be idempotent.
func idempotent(m int) bool {
	switch m {
	case methodGET, methodHEAD, methodPUT, methodDELETE, methodOPTIONS, methodTRACE:
		return true
	}
	return false
}

// leadingMethod classifies the method of a request head that was not
// parsed (one too large): the first word of b, after the empty lines a
// client may send before the request line (RFC 9112 2.2).
func leadingMethod(b []byte) int {
	b = bytes.TrimLeft(b, "\r\n")
	if i := bytes.IndexByte(b, ' '); i > 0 {
		return methodClass(b[:i])
	}
	return methodOTHER
}

// methodClass folds a method to one of the standard ones or OTHER, so that a
// client cannot create label values. Methods are case-sensitive.
func methodClass(m []byte) int {
	switch string(m) { // the compiler does not allocate for this conversion
	case "GET":
		return methodGET
	case "HEAD":
		return methodHEAD
	case "POST":
		return methodPOST
	case "PUT":
		return methodPUT
	case "DELETE":
		return methodDELETE
	case "CONNECT":
		return methodCONNECT
	case "OPTIONS":
		return methodOPTIONS
	case "TRACE":
		return methodTRACE
	case "PATCH":
		return methodPATCH
	}
	return methodOTHER
}

// Field kinds the proxy treats specially; everything else is kindOther.
const (
	kindOther = iota
	kindHost
	kindContentLength
	kindTransferEncoding
	kindConnection
	kindKeepAlive
	kindProxyConnection
	kindTE
	kindTrailer
	kindUpgrade
	kindExpect
	kindXForwardedFor
	kindXForwardedProto
	kindXForwardedHost
	// kindHop marks a field named in Connection: dropped like the others.
	kindHop
	// kindUnderscore marks a name holding an underscore: dropped from
	// requests unless Config.KeepUnderscoreHeaders, passed on in responses.
	kindUnderscore
)

// span is a byte range [start, end) of a head.
type span struct{ start, end int32 }

func (s span) of(b []byte) []byte { return b[s.start:s.end] }

// field is one header field line: its name, its value without surrounding
// whitespace, and its kind.
type field struct {
	name, value span
	kind        uint8
}

// head is a parsed request or response head. Every span points into the
// bytes it was parsed from, which stay in the connection's buffer until
// the head has been forwarded.
type head struct {
	// Request line, or status line of a response.
	method, target span
	methodClass    int
	status         int
	reason         span
	minor          int // HTTP/1.minor

	fields []field

	// contentLength is -1 when the head has none.
	contentLength int64
	chunked       bool
	// otherCoding is set on a response whose Transfer-Encoding is not
	// exactly chunked.
	otherCoding bool
	// lengthAndCoding is set on a response with both Content-Length and
	// Transfer-Encoding: Transfer-Encoding wins (RFC 9112 6.3), but the
	// app's idea of where the body ends is in doubt.
	lengthAndCoding bool
	// underscores counts request fields whose names hold an underscore.
	underscores int
	// absHost is the authority of an absolute-form request target
	// ("GET http://host/path"), which then replaces Host; target is then
	// the path and query, and rootTarget says "/" goes before it, or "*"
	// when asteriskTarget is set too.
	absHost        span
	absolute       bool
	rootTarget     bool
	asteriskTarget bool
	hasHost        bool
	// Connection options.
	connClose, connKeepAlive, connUpgrade bool
	hasUpgrade                            bool
	expectContinue                        bool
	teTrailers                            bool
	// xff counts X-Forwarded-For fields; proto and host say whether an
	// X-Forwarded-Proto and -Host field with a value was present.
	xff                 int
	hasXFProto, hasXFHo bool
}

func (h *head) reset() {
	fields := h.fields[:0]
	*h = head{fields: fields, contentLength: -1, methodClass: methodOTHER}
}

// keepAlive reports whether the client of a request wants its connection
// kept open after the response.
func (h *head) keepAlive() bool {
	if h.minor == 1 {
		return !h.connClose
	}
	return h.connKeepAlive && !h.connClose
}

// tchar is RFC 9110's token alphabet.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// Classes of field-name bytes: nameChar tells a token byte from others
// and singles out '_', at no extra cost per byte.
const (
	nameBad = iota
	nameOK
	nameUnderscore
)

var nameChar = func() (t [256]uint8) {
	for c := range t {
		if tchar[c] {
			t[c] = nameOK
		}
	}
	t['_'] = nameUnderscore
	return t
}()

// vchar allows a field value's bytes: visible ASCII, SP, HTAB and obs-text.
var vchar = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	t['\t'] = true
	return t
}()

// targetChar allows a request target's bytes: visible ASCII and obs-text.
var targetChar = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = true
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	return t
}()

// nextLine returns the line starting at b[pos:] without its terminator and
// the position after it. A line ends in CRLF or a bare LF (RFC 9112 allows
// recipients to accept LF); a CR anywhere else is an error.
func nextLine(b []byte, pos int) (line []byte, next int, err error) {
	i := bytes.IndexByte(b[pos:], '\n')
	if i < 0 {
		return nil, pos, errNeedMore
	}
	line = b[pos : pos+i]
	next = pos + i + 1
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, next, nil
}

// parseRequest parses a request head at the start of b into h. It returns
// the head's length, errNeedMore when b holds no complete head, or a
// *headError. It checks everything that decides how the body is framed,
// refusing every ambiguous combination (request smuggling).
func parseRequest(b []byte, h *head, maxFields int) (int, error) {
	h.reset()
	pos := 0
	// RFC 9112 2.2: ignore at least one empty line before the request line.
	for i := 0; i < 2 && pos < len(b); i++ {
		if b[pos] == '\n' {
			pos++
		} else if b[pos] == '\r' && pos+1 < len(b) && b[pos+1] == '\n' {
			pos += 2
		}
	}
	start := pos
	line, pos, err := nextLine(b, pos)
	if err != nil {
		return 0, err
	}
	if err := parseRequestLine(line, int32(start), h); err != nil {
		return 0, err
	}
	n, err := parseFields(b, pos, h, maxFields)
	if err != nil {
		return 0, err
	}
	if err := checkRequestFraming(b, h); err != nil {
		return 0, err
	}
	return n, nil
}

func parseRequestLine(line []byte, off int32, h *head) error {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return errBadRequestLine
	}
	for _, c := range line[:sp] {
		if !tchar[c] {
			return errBadMethod
		}
	}
	rest := line[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return errBadRequestLine
	}
	for _, c := range rest[:sp2] {
		if !targetChar[c] {
			if c == '\r' {
				return errBareCR
			}
			return errBadTarget
		}
	}
	h.method = span{off, off + int32(sp)}
	h.methodClass = methodClass(line[:sp])
	h.target = span{off + int32(sp) + 1, off + int32(sp) + 1 + int32(sp2)}
	if rest[0] != '/' {
		if err := parseOddTarget(rest[:sp2], h); err != nil {
			return err
		}
	}
	switch string(rest[sp2+1:]) {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		if bytes.IndexByte(rest[sp2+1:], '\r') >= 0 {
			return errBareCR
		}
		if bytes.HasPrefix(rest[sp2+1:], []byte("HTTP/")) {
			return errBadVersion
		}
		return errBadRequestLine
	}
	return nil
}

// parseOddTarget checks a request target that is not in origin-form
// ("/path"): "*" (OPTIONS only, RFC 9112 3.2.4), host:port (CONNECT,
// refused later), or the absolute-form "http://host/path" that clients
// send to proxies. An absolute-form target is forwarded in origin-form
// with its authority as Host (RFC 9112 3.2.2); anything else is refused.
func parseOddTarget(t []byte, h *head) error {
	if h.methodClass == methodCONNECT {
		return nil
	}
	if string(t) == "*" {
		if h.methodClass != methodOPTIONS {
			return errBadTarget
		}
		return nil
	}
	scheme := bytes.Index(t, []byte("://"))
	if scheme <= 0 || !(foldEq(t[:scheme], "http") || foldEq(t[:scheme], "https")) {
		return errBadTarget
	}
	auth := t[scheme+3:]
	end := bytes.IndexAny(auth, "/?")
	if end < 0 {
		end = len(auth)
	}
	// userinfo ("user:pw@host") is forbidden in http(s) URIs (RFC 9110
	// 4.2.4); "#" never belongs in a request target.
	if end == 0 || bytes.IndexByte(auth[:end], '@') >= 0 || bytes.IndexByte(t, '#') >= 0 {
		return errBadTarget
	}
	start := h.target.start + int32(scheme+3)
	h.absolute = true
	h.absHost = span{start, start + int32(end)}
	h.target = span{start + int32(end), h.target.end}
	h.rootTarget = end == len(auth) || auth[end] == '?'
	// "OPTIONS http://host" asks about the server, not about "/": the
	// last proxy sends it as "OPTIONS *" (RFC 9112 3.2.4).
	h.asteriskTarget = h.methodClass == methodOPTIONS && end == len(auth)
	return nil
}

// parseResponse parses a response head at the start of b into h, as
// parseRequest does. Errors become 502s.
func parseResponse(b []byte, h *head, maxFields int) (int, error) {
	h.reset()
	line, pos, err := nextLine(b, 0)
	if err != nil {
		return 0, err
	}
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' ||
		(len(line) > 12 && line[12] != ' ') {
		return 0, errBadStatusLine
	}
	switch line[7] {
	case '0':
		h.minor = 0
	case '1':
		h.minor = 1
	default:
		return 0, errBadStatusLine
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, errBadStatusLine
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || code > 599 {
		return 0, errBadStatusLine
	}
	h.status = code
	h.reason = span{12, int32(len(line))}
	if len(line) > 12 {
		h.reason.start = 13
		for _, c := range line[13:] {
			if !vchar[c] {
				return 0, errBadStatusLine
			}
		}
	}
	n, err := parseFields(b, pos, h, maxFields)
	if err != nil {
		if _, ok := err.(*headError); ok {
			return 0, errBadStatusLine
		}
		return 0, err
	}
	if err := checkResponseFraming(b, h); err != nil {
		return 0, err
	}
	return n, nil
}

// parseFields parses header fields from b[pos:] up to the empty line and
// returns the position after it.
func parseFields(b []byte, pos int, h *head, maxFields int) (int, error) {
	for {
		lineStart := pos
		line, next, err := nextLine(b, pos)
		if err != nil {
			return 0, err
		}
		pos = next
		if len(line) == 0 {
			return pos, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return 0, errObsFold
		}
		if len(h.fields) == maxFields {
			return 0, errTooManyFields
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			if bytes.IndexByte(line, '\r') >= 0 {
				return 0, errBareCR
			}
			return 0, errBadFieldName
		}
		kind := uint8(kindOther)
		for _, c := range line[:colon] {
			if nameChar[c] != nameOK {
				if nameChar[c] == nameBad {
					// Includes "Name : value": no whitespace before the colon.
					return 0, errBadFieldName
				}
				kind = kindUnderscore
			}
		}
		vs, ve := colon+1, len(line)
		for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
			vs++
		}
		for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
			ve--
		}
		for _, c := range line[vs:ve] {
			if !vchar[c] {
				if c == '\r' {
					return 0, errBareCR
				}
				return 0, errBadFieldValue
			}
		}
		off := int32(lineStart)
		if kind == kindOther {
			kind = fieldKind(line[:colon])
		} else {
			h.underscores++
		}
		f := field{
			name:  span{off, off + int32(colon)},
			value: span{off + int32(vs), off + int32(ve)},
			kind:  kind,
		}
		h.fields = append(h.fields, f)
	}
}

// fieldKind classifies a field name, ignoring ASCII case.
func fieldKind(name []byte) uint8 {
	switch len(name) {
	case 2:
		if foldEq(name, "te") {
			return kindTE
		}
	case 4:
		if foldEq(name, "host") {
			return kindHost
		}
	case 6:
		if foldEq(name, "expect") {
			return kindExpect
		}
	case 7:
		if foldEq(name, "upgrade") {
			return kindUpgrade
		}
		if foldEq(name, "trailer") {
			return kindTrailer
		}
	case 10:
		if foldEq(name, "connection") {
			return kindConnection
		}
		if foldEq(name, "keep-alive") {
			return kindKeepAlive
		}
	case 14:
		if foldEq(name, "content-length") {
			return kindContentLength
		}
	case 15:
		if foldEq(name, "x-forwarded-for") {
			return kindXForwardedFor
		}
	case 16:
		if foldEq(name, "proxy-connection") {
			return kindProxyConnection
		}
		if foldEq(name, "x-forwarded-host") {
			return kindXForwardedHost
		}
	case 17:
		if foldEq(name, "transfer-encoding") {
			return kindTransferEncoding
		}
		if foldEq(name, "x-forwarded-proto") {
			return kindXForwardedProto
		}
	}
	return kindOther
}

// foldEq reports whether b equals the lower-case ASCII string s, ignoring
// the case of b.
func foldEq(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// checkRequestFraming reads the fields that frame the body and the
// connection options, refusing anything ambiguous.
func checkRequestFraming(b []byte, h *head) error {
	codings := 0
	for i := range h.fields {
		f := &h.fields[i]
		v := f.value.of(b)
		switch f.kind {
		case kindHost:
			if h.hasHost {
				return errManyHosts
			}
			h.hasHost = true
		case kindContentLength:
			n, err := parseContentLength(v)
			if err != nil {
				return err
			}
			if h.contentLength >= 0 && h.contentLength != n {
				return errLengthMismatch
			}
			h.contentLength = n
		case kindTransferEncoding:
			codings++
			if codings > 1 {
				return errManyCodings
			}
			if !foldEq(v, "chunked") {
				return errBadCoding
			}
			h.chunked = true
		case kindConnection:
			connectionOptions(b, h, f)
		case kindUpgrade:
			h.hasUpgrade = true
		case kindExpect:
			if foldEq(v, "100-continue") {
				h.expectContinue = true
			}
		case kindTE:
			h.teTrailers = hasToken(v, "trailers")
		case kindXForwardedFor:
			h.xff++
		case kindXForwardedProto:
			// An empty field is an absent one: it is not forwarded, and
			// outrider adds its own.
			h.hasXFProto = h.hasXFProto || len(v) > 0
		case kindXForwardedHost:
			h.hasXFHo = h.hasXFHo || len(v) > 0
		}
	}
	if h.chunked && h.contentLength >= 0 {
		return errLengthAndChunk
	}
	if h.minor == 0 && h.chunked {
		// Chunked is HTTP/1.1; a 1.0 message with it is not trustworthy.
		return errBadCoding
	}
	if h.minor == 1 && !h.hasHost {
		return errNoHost
	}
	markConnectionNamed(b, h)
	return nil
}

// checkResponseFraming reads the fields that frame a response body.
func checkResponseFraming(b []byte, h *head) error {
	codings := 0
	for i := range h.fields {
		f := &h.fields[i]
		v := f.value.of(b)
		switch f.kind {
		case kindContentLength:
			n, err := parseContentLength(v)
			if err != nil {
				return errBadStatusLine
			}
			if h.contentLength >= 0 && h.contentLength != n {
				return errBadStatusLine
			}
			h.contentLength = n
		case kindTransferEncoding:
			// RFC 9112 6.3: chunked must be the last coding; anything else
			// runs until the connection closes. outrider forwards chunked
			// alone; otherCoding makes the answer a 502.
			codings++
			if codings == 1 && foldEq(v, "chunked") {
				h.chunked, h.otherCoding = true, false
			} else {
				h.chunked, h.otherCoding = false, true
			}
		case kindConnection:
			connectionOptions(b, h, f)
		case kindUpgrade:
			h.hasUpgrade = true
		}
	}
	if h.chunked || h.otherCoding {
		// Transfer-Encoding overrides Content-Length (RFC 9112 6.3).
		h.lengthAndCoding = h.contentLength >= 0
		h.contentLength = -1
	}
	markConnectionNamed(b, h)
	return nil
}

// parseContentLength parses a Content-Length value: digits, or a list of
// identical values ("5, 5"), as RFC 9110 8.6 allows.
func parseContentLength(v []byte) (int64, error) {
	n := int64(-1)
	for len(v) > 0 {
		item := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		item = bytes.Trim(item, " \t")
		if len(item) == 0 || len(item) > 18 {
			return 0, errBadLength
		}
		var m int64
		for _, c := range item {
			if c < '0' || c > '9' {
				return 0, errBadLength
			}
			m = m*10 + int64(c-'0')
		}
		if n >= 0 && n != m {
			return 0, errLengthMismatch
		}
		n = m
	}
	if n < 0 {
		return 0, errBadLength
	}
	return n, nil
}

// connectionOptions records the options of one Connection field.
func connectionOptions(b []byte, h *head, f *field) {
	forTokens(f.value.of(b), func(t []byte) {
		switch {
		case foldEq(t, "close"):
			h.connClose = true
		case foldEq(t, "keep-alive"):
			h.connKeepAlive = true
		case foldEq(t, "upgrade"):
			h.connUpgrade = true
		}
	})
}

// markConnectionNamed turns fields named in Connection into kindHop, so
// they are not forwarded (RFC 9110 7.6.1). Upgrade keeps its kind: the
// forwarder decides on it.
func markConnectionNamed(b []byte, h *head) {
	for i := range h.fields {
		f := &h.fields[i]
		if f.kind != kindConnection {
			continue
		}
		forTokens(f.value.of(b), func(t []byte) {
			for j := range h.fields {
				g := &h.fields[j]
				if (g.kind == kindOther || g.kind == kindUnderscore) && bytes.EqualFold(g.name.of(b), t) {
					g.kind = kindHop
				}
			}
		})
	}
}

// connectionNamed returns, comma-separated, the field names the
// Connection fields of h list beside the options close, keep-alive and
// upgrade: nil, without allocating, when there are none. A field so named
// may come as a trailer, after the head has left the buffer.
func connectionNamed(b []byte, h *head) []byte {
	var names []byte
	for i := range h.fields {
		f := &h.fields[i]
		if f.kind != kindConnection {
			continue
		}
		forTokens(f.value.of(b), func(t []byte) {
			if !foldEq(t, "close") && !foldEq(t, "keep-alive") && !foldEq(t, "upgrade") {
				names = append(append(names, t...), ',')
			}
		})
	}
	return names
}

// forTokens calls fn with each non-empty element of a comma-separated list.
func forTokens(v []byte, fn func([]byte)) {
	for len(v) > 0 {
		item := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		item = bytes.Trim(item, " \t")
		if len(item) > 0 {
			fn(item)
		}
	}
}

// hasToken reports whether the list v holds token, ignoring case and
// parameters.
func hasToken(v []byte, token string) bool {
	found := false
	forTokens(v, func(t []byte) {
		if i := bytes.IndexByte(t, ';'); i >= 0 {
			t = bytes.TrimRight(t[:i], " \t")
		}
		if foldEq(t, token) {
			found = true
		}
	})
	return found
}

// parseChunkLine parses a chunk-size line without its CRLF: hex digits,
// then optional extensions, which are checked and dropped.
func parseChunkLine(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 {
			return 0, errBadChunk
		}
		n = n<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, errBadChunk
	}
	rest := line[i:]
	// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if len(rest) > 0 && rest[0] != ';' {
		return 0, errBadChunk
	}
	for _, c := range rest {
		if !vchar[c] {
			return 0, errBadChunk
		}
	}
	return n, nil
}
