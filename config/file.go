package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/outrider-sidecar/outrider/internal/regularfile"
)

// Reloadable lists the variables a config file may set, which outrider
// applies at run time; a file's keys are their names without OUTRIDER_, in
// lower case. The rest of the contract (listeners, service name and ID,
// the registry…) is read once at start-up from the environment.
func Reloadable() []string { return slices.Clone(reloadable) }

var reloadable = []string{
	"OUTRIDER_SERVICE_TAGS",
	"OUTRIDER_SERVICE_META",
	"OUTRIDER_PROBE",
	"OUTRIDER_PROBE_HEADERS",
	"OUTRIDER_PROBE_INSECURE",
	"OUTRIDER_PROBE_PERIOD",
	"OUTRIDER_PROBE_TIMEOUT",
	"OUTRIDER_PROBE_FAILURE_THRESHOLD",
	"OUTRIDER_PROBE_SUCCESS_THRESHOLD",
	"OUTRIDER_CHECK_TTL",
	"OUTRIDER_DRAIN_DELAY",
	"OUTRIDER_DRAIN_TIMEOUT",
	"OUTRIDER_LOG_LEVEL",
}

// fileKey is the config-file key of the variable name.
func fileKey(name string) string { return strings.ToLower(strings.TrimPrefix(name, "OUTRIDER_")) }

// FileError is one problem in a config file, with the line it is on (0
// when unknown) and the key, when there is one.
type FileError struct {
	Path string
	Line int
	Key  string
	Msg  string
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.Path)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// File is a parsed config file: the settings it holds, as the values of
// the variables they stand for, and the line each came from.
type File struct {
	Path   string
	values map[string]fileValue // by variable name
	// empty is set when the file holds nothing, not even {}: no document,
	// or a null one (blanks, comments, a lone ---).
	empty bool
}

type fileValue struct {
	key, value string
	line       int
}

// Over returns getenv with the file's settings laid over it: the file wins.
func (f File) Over(getenv func(string) string) func(string) string {
	return func(name string) string {
		if v, ok := f.values[name]; ok {
			return v.value
		}
		return getenv(name)
	}
}

// value is the setting of the variable name that f holds; f may be nil.
func (f *File) value(name string) (fileValue, bool) {
	if f == nil {
		return fileValue{}, false
	}
	v, ok := f.values[name]
	return v, ok
}

// ReadFile reads and parses the config file at path, which must be a
// regular file (or a symlink to one).
func ReadFile(path string) (File, error) {
	f, _, err := readFile(path)
	return f, err
}

// readFile is ReadFile that also returns the content it parsed.
func readFile(path string) (File, []byte, error) {
	data, err := regularfile.Read(path)
	if nre := (*regularfile.NotRegularError)(nil); errors.As(err, &nre) {
		// A pipe would be read empty, or wait for a writer, or give its
		// content to one reader and not the next: a reload reads again.
		return File{}, nil, &Error{Var: "OUTRIDER_CONFIG_FILE", Value: path, Want: "is not a regular file (" + nre.Kind() + "); point it at a file"}
	}
	if err != nil {
		return File{}, nil, fmt.Errorf("read config file (OUTRIDER_CONFIG_FILE): %w", err)
	}
	f, err := ParseFile(path, data)
	return f, data, err
}

// yamlLine finds the line in the YAML parser's messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserError matches the messages of the YAML library's parser, as
// against its scanner's; yamlLineless those of aliases and anchors, which
// name no line.
var (
	yamlParserError = regexp.MustCompile(`^(did not find expected|found duplicate %|found incompatible YAML document|found undefined tag handle)`)
	yamlLineless    = regexp.MustCompile(`^(unknown anchor|anchor '.*' value contains itself|document contains excessive aliasing)`)
)

// ParseFile parses data, the content of the config file at path: YAML (so
// JSON too), a map of keys to strings, lists of strings or maps of
// strings. Every problem is reported, each as a *FileError.
func ParseFile(path string, data []byte) (File, error) {
	f := File{Path: path, values: map[string]fileValue{}}
	docs, err := yamlDocuments(data)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		switch {
		case yamlParserError.MatchString(msg):
			// The parser's own errors (not the scanner's) count lines
			// from 0 in this YAML library.
			line++
		case line == 0 && !yamlLineless.MatchString(msg):
			// Both leave out a line 0: the scanner's is the first line.
			line = 1
		}
		return File{}, errors.Join(&FileError{Path: path, Line: line, Msg: "not YAML or JSON: " + msg})
	}
	// Settings in a later document would be ignored: it is refused. A
	// document with nothing in it (a trailing ---) holds no setting.
	var later error
	for _, d := range docs[min(1, len(docs)):] {
		if len(d.Content) > 0 && !isNull(d.Content[0]) {
			later = &FileError{Path: path, Line: d.Line, Msg: "another YAML document starts here; outrider reads only the first (put every setting in it and remove the ---)"}
			break
		}
	}
	if len(docs) == 0 || len(docs[0].Content) == 0 || isNull(docs[0].Content[0]) {
		if later != nil {
			return File{}, errors.Join(later)
		}
		f.empty = true
		return f, nil // no settings
	}
	top := docs[0].Content[0]
	if top.Kind != yaml.MappingNode {
		return File{}, errors.Join(&FileError{Path: path, Line: top.Line, Msg: "want a map of settings (key: value)"}, later)
	}
	known := map[string]bool{}
	for _, s := range (Config{}).Effective() {
		known[s.Var] = true
	}
	var errs []error
	fail := func(line int, key, msg string) {
		errs = append(errs, &FileError{Path: path, Line: line, Key: key, Msg: msg})
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		key := k.Value
		name := "OUTRIDER_" + strings.ToUpper(key)
		switch {
		case k.Kind != yaml.ScalarNode || key != strings.ToLower(key) || strings.HasPrefix(strings.ToLower(key), "outrider_"):
			fail(k.Line, key, "is not a setting (want a key such as service_tags: the variable's name without OUTRIDER_, in lower case)")
			continue
		case !known[name]:
			fail(k.Line, key, "is not a setting (want one of "+strings.Join(reloadableKeys(), ", ")+")")
			continue
		case !slices.Contains(reloadable, name):
			fail(k.Line, key, "cannot change at run time (set "+name+" in the environment and restart)")
			continue
		}
		if prev, dup := f.values[name]; dup {
			fail(k.Line, key, fmt.Sprintf("is set twice (first on line %d)", prev.line))
			continue
		}
		if v.Kind != yaml.ScalarNode && name != "OUTRIDER_SERVICE_TAGS" && name != "OUTRIDER_SERVICE_META" {
			fail(v.Line, key, "want one value, not a list or a map")
			continue
		}
		value, err := nodeValue(v)
		if err != nil {
			line := v.Line
			if ie := (*itemError)(nil); errors.As(err, &ie) {
				line = ie.line
			}
			fail(line, key, err.Error())
			continue
		}
		f.values[name] = fileValue{key: key, value: value, line: v.Line}
	}
	if later != nil {
		errs = append(errs, later)
	}
	if len(errs) > 0 {
		return File{}, errors.Join(errs...)
	}
	return f, nil
}

// yamlDocuments parses every document of data; none when it is empty.
func yamlDocuments(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return docs, nil
		} else if err != nil {
			return nil, err
		}
		docs = append(docs, &doc)
	}
}

// isNull reports whether n is a YAML null: ~, null or nothing at all.
func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func reloadableKeys() []string {
	keys := make([]string, len(reloadable))
	for i, name := range reloadable {
		keys[i] = fileKey(name)
	}
	return keys
}

// itemError is a problem with one item of a list or a map, on its own line.
type itemError struct {
	line int
	msg  string
}

func (e *itemError) Error() string { return e.msg }

// nodeValue turns a value into the string the variable would hold: a
// list into a,b,c and a map into k1=v1,k2=v2. A null alone is the empty
// value; inside a list or a map it has no string to stand for, and is
// refused rather than read as "~" or "null".
func nodeValue(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			return "", nil
		}
		return n.Value, nil
	case yaml.SequenceNode:
		items := make([]string, 0, len(n.Content))
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return "", errors.New("is a list of something else than strings (want e.g. [a, b])")
			}
			if isNull(item) {
				return "", &itemError{item.Line, fmt.Sprintf("item %d is null, which is not a value (remove it, or quote it)", i+1)}
			}
			if strings.Contains(item.Value, ",") {
				return "", fmt.Errorf("item %q holds a comma, which separates items", item.Value)
			}
			items = append(items, item.Value)
		}
		return strings.Join(items, ","), nil
	case yaml.MappingNode:
		pairs := make([]string, 0, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
				return "", errors.New("is a map of something else than strings (want e.g. {team: shop})")
			}
			if isNull(k) {
				return "", &itemError{k.Line, "a key is null, which is not a key (remove the pair, or quote the key)"}
			}
			if isNull(v) {
				return "", &itemError{v.Line, fmt.Sprintf("the value of %s is null, which is not a value (remove the pair, or quote the value)", k.Value)}
			}
			if strings.ContainsAny(k.Value, ",=") || strings.Contains(v.Value, ",") {
				return "", fmt.Errorf("pair %s: %s holds a comma or '=', which separate pairs", k.Value, v.Value)
			}
			pairs = append(pairs, k.Value+"="+v.Value)
		}
		return strings.Join(pairs, ","), nil
	}
	return "", errors.New("want a string, a list or a map")
}

// LoadWithFile is Load with the config file that OUTRIDER_CONFIG_FILE
// names, if any, laid over the environment: defaults < environment <
// file. The environment and the file are checked together, so that the
// errors of both come at once; one about a value from the file names the
// file, the line and the key instead of the variable. A file that cannot
// be read or parsed is reported alone: what is valid in the environment
// depends on the settings it holds (headers need an http probe, which the
// file may set). It returns the file's content as it was read too (nil
// without a file, or on an error), so that a watch of the file can tell a
// change from the content the configuration came from.
func LoadWithFile(getenv func(string) string, hostname string, interfaceAddr func() (string, error)) (Config, []byte, error) {
	return loadWithFile(getenv, hostname, interfaceAddr, false, nil)
}

// Reload is LoadWithFile for an outrider that is running, which refuses
// a config file with nothing in it: blanks, comments or a lone ---. Such
// a file is more likely one caught being written, or cut short by a full
// disk, than a wish to drop every setting it held; {} is that wish. data
// is the file's content as a watch of it confirmed, which is parsed
// rather than a read of the file now, which could find it changed again
// or half written; nil reads the file.
func Reload(getenv func(string) string, hostname string, interfaceAddr func() (string, error), data []byte) (Config, error) {
	c, _, err := loadWithFile(getenv, hostname, interfaceAddr, true, data)
	return c, err
}

func loadWithFile(getenv func(string) string, hostname string, interfaceAddr func() (string, error), reload bool, content []byte) (Config, []byte, error) {
	// Load reads the variable so: trimmed, and a file cannot set it.
	path := strings.TrimSpace(getenv("OUTRIDER_CONFIG_FILE"))
	if path == "" {
		c, err := Load(getenv, hostname, interfaceAddr)
		return c, nil, err
	}
	var f File
	var data []byte
	var err error
	if content != nil {
		data = content
		f, err = ParseFile(path, data)
	} else {
		f, data, err = readFile(path)
	}
	if err == nil && reload && f.empty {
		err = errors.Join(&FileError{Path: f.Path, Msg: "the file is empty (or only comments or ---); write {} to clear every setting"})
	}
	if err != nil {
		c, _ := Load(getenv, hostname, interfaceAddr)
		return c, nil, err
	}
	c, err := loadOver(f.Over(getenv), hostname, interfaceAddr, &f)
	hidden := hiddenByFile(getenv, hostname, interfaceAddr, f)
	if err == nil && hidden == nil {
		return c, data, nil
	}
	var errs []error
	for _, e := range unjoinErr(err) {
		if e == nil {
			continue
		}
		var ce *Error
		if errors.As(e, &ce) {
			if v, ok := f.values[ce.Var]; ok {
				e = &FileError{Path: f.Path, Line: v.line, Key: v.key, Msg: fmt.Sprintf("%q %s", ce.Value, ce.Want)}
			}
		}
		errs = append(errs, e)
	}
	return c, nil, errors.Join(append(errs, hidden...)...)
}

// hiddenByFile checks the environment's own value of each variable the
// file sets. The file's value is the one in force, but a bad one in the
// environment must not pass unseen: once the key leaves the file, the
// reload would fall back to it and be refused, and only a restart could
// mend it. Whether the probe uses a setting is not checked: the file's
// probe may be the one that does.
func hiddenByFile(getenv func(string) string, hostname string, interfaceAddr func() (string, error), f File) []error {
	var hidden []error
	_, err := loadReader(&reader{getenv: getenv, valuesOnly: true}, hostname, interfaceAddr)
	for _, e := range unjoinErr(err) {
		var ce *Error
		if !errors.As(e, &ce) {
			continue
		}
		if v, ok := f.values[ce.Var]; ok && strings.TrimSpace(getenv(ce.Var)) != "" {
			hidden = append(hidden, &Error{Var: ce.Var, Value: ce.Value, Want: fmt.Sprintf(
				"%s; the config file's %s (%s:%d) is in force over it, but a reload without that key would take this value and be refused (mend or unset the variable)",
				ce.Want, v.key, f.Path, v.line)})
		}
	}
	return hidden
}

func unjoinErr(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
