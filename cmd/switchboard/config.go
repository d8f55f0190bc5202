package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// A configuration file sets flags: each top-level key is a flag's name with
// "_" for "-" (data_dir is --data-dir), and its value is what the flag
// would be given, parsed by the flag itself (durations "5s", sizes "1MiB",
// booleans true/false); a repeatable flag takes a YAML list. Precedence:
// the command line, then the flag's environment twin SWITCHBOARD_…, then
// the file, then the flag's default. The keys come from the command's flag
// set, so a new flag has a key without anything written here.

// configFlag is the flag naming the configuration file (environment:
// SWITCHBOARD_CONFIG). It has no key of its own.
const configFlag = "config"

// maxConfigBytes bounds a configuration file.
const maxConfigBytes = 1 << 20

// configKey is the file's key of a flag.
func configKey(flag string) string { return strings.ReplaceAll(flag, "-", "_") }

// configError is one problem in a configuration file, naming its key and
// line.
type configError struct {
	key     string // "" for the whole file
	line    int
	problem string
}

func (e *configError) Error() string {
	if e.key == "" {
		return e.problem
	}
	return fmt.Sprintf("%s (line %d): %s", e.key, e.line, e.problem)
}

// readConfigDocument reads a YAML file of one document and returns its
// top-level mapping; an empty file is an empty mapping.
func readConfigDocument(path string) (*yaml.Node, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(b) > maxConfigBytes {
		return nil, fmt.Errorf("config %s: larger than %d bytes", path, maxConfigBytes)
	}
	root, err := parseConfigDocument(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return root, nil
}

// parseConfigDocument parses b as one YAML document whose top level is a
// mapping (or nothing).
func parseConfigDocument(b []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{Kind: yaml.MappingNode}, nil
		}
		return nil, err
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return &yaml.Node{Kind: yaml.MappingNode}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, &configError{problem: fmt.Sprintf("line %d: want a mapping of settings (key: value)", root.Line)}
	}
	return root, nil
}

// fileKeys decides what a file's top-level key is: the flag it sets, or
// for a key the command reads in some other way (the host's streams),
// owned; a key that is neither is unknown.
type fileKeys struct {
	fs *pflag.FlagSet
	// reserved are flags without a key (the file's own --config, the
	// host's quick-form flags).
	reserved map[string]bool
	// others are keys read by someone else (the host agent's
	// configuration): left alone here.
	others map[string]bool
}

// flag returns the flag a key sets, or nil.
func (k fileKeys) flag(key string) *pflag.Flag {
	name := strings.ReplaceAll(key, "_", "-")
	if strings.Contains(key, "-") || k.reserved[name] || name == "help" {
		return nil
	}
	return k.fs.Lookup(name)
}

// keyed lists the flags that have keys, in the flag set's order.
func (k fileKeys) keyed() []*pflag.Flag {
	var out []*pflag.Flag
	k.fs.VisitAll(func(f *pflag.Flag) {
		if !k.reserved[f.Name] && f.Name != "help" && !k.others[configKey(f.Name)] {
			out = append(out, f)
		}
	})
	return out
}

// applyConfig sets, from the mapping root, every flag that is neither on
// the command line nor in the environment (both mark it changed), and
// marks it changed, as if given. The error lists every problem, each naming
// its key and line.
func applyConfig(root *yaml.Node, keys fileKeys) error {
	type setting struct {
		f    *pflag.Flag
		key  *yaml.Node
		list []string
		val  string
	}
	var errs []error
	fail := func(k *yaml.Node, format string, args ...any) {
		errs = append(errs, &configError{key: k.Value, line: k.Line, problem: fmt.Sprintf(format, args...)})
	}
	var settings []setting
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, &configError{problem: fmt.Sprintf("line %d: a key must be a name", k.Line)})
			continue
		}
		if line, dup := seen[k.Value]; dup {
			fail(k, "given twice (first on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		if keys.others[k.Value] {
			continue
		}
		f := keys.flag(k.Value)
		if f == nil {
			fail(k, "unknown key%s", unknownHint(k.Value, keys))
			continue
		}
		s := setting{f: f, key: k}
		if _, isList := f.Value.(pflag.SliceValue); isList {
			if v.Kind != yaml.SequenceNode {
				fail(k, "want a list (%s is repeatable), e.g. [a, b]", "--"+f.Name)
				continue
			}
			s.list = []string{}
			ok := true
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode || e.Tag == "!!null" {
					fail(k, "line %d: each item must be a value", e.Line)
					ok = false
					break
				}
				s.list = append(s.list, e.Value)
			}
			if !ok {
				continue
			}
		} else {
			if v.Kind != yaml.ScalarNode {
				fail(k, "want a single value, not a list or mapping")
				continue
			}
			if v.Tag == "!!null" {
				fail(k, "no value (leave the key out for the default)")
				continue
			}
			s.val = v.Value
		}
		settings = append(settings, s)
	}
	// A value its flag refuses fails the command, so the settings applied
	// before it do no harm.
	for _, s := range settings {
		if s.f.Changed {
			continue // the command line or the environment wins
		}
		var err error
		if sv, ok := s.f.Value.(pflag.SliceValue); ok {
			if err = sv.Replace(s.list); err != nil {
				fail(s.key, "%v", err)
				continue
			}
		} else if err = s.f.Value.Set(s.val); err != nil {
			fail(s.key, "%q: %v", s.val, err)
			continue
		}
		s.f.Changed = true
	}
	return errors.Join(errs...)
}

// unknownHint helps with an unknown key: the "_" spelling of a flag
// written with "-", or the keys nearest by name.
func unknownHint(key string, keys fileKeys) string {
	if strings.Contains(key, "-") {
		if f := keys.flag(configKey(key)); f != nil {
			return fmt.Sprintf(" (write %s: keys use _ where the flag has -)", configKey(key))
		}
	}
	var near []string
	for _, f := range keys.keyed() {
		k := configKey(f.Name)
		if strings.HasPrefix(k, key) || strings.HasPrefix(key, k) || editDistance(k, key) <= 2 {
			near = append(near, k)
		}
	}
	sort.Strings(near)
	if len(near) > 0 && len(near) <= 5 {
		return " (did you mean " + strings.Join(near, ", ") + "?)"
	}
	return " (keys are flag names with _ for -, e.g. data_dir; see docs/serve.example.yaml)"
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// loadConfigFile applies the file --config names (if any) to fs.
func loadConfigFile(fs *pflag.FlagSet, keys fileKeys) error {
	f := fs.Lookup(configFlag)
	if f == nil || f.Value.String() == "" {
		return nil
	}
	path := f.Value.String()
	root, err := readConfigDocument(path)
	if err != nil {
		return err
	}
	if err := applyConfig(root, keys); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// serveFileKeys are the keys of `switchboard serve --config FILE`: every
// flag but --config.
func serveFileKeys(fs *pflag.FlagSet) fileKeys {
	return fileKeys{fs: fs, reserved: map[string]bool{configFlag: true}}
}
