package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/switchboard-hub/switchboard/internal/topic"
)

// Stream kinds.
const (
	KindTCP      = "tcp"
	KindHTTPPush = "http-push"
	KindExec     = "exec"
	KindShell    = "shell"
)

// Defaults and bounds of the stream settings.
const (
	// DefaultChunk is the largest message a stream sends (tcp, exec,
	// http-push; MPEG-TS is rounded down to whole 188-byte packets).
	DefaultChunk = 32 << 10
	// MaxChunk bounds the chunk setting (pkg/client's default read limit;
	// the relay's --max-message, 1 MiB by default, must also allow it).
	MaxChunk = 16 << 20
	// DefaultMaxSessions bounds the concurrent sessions of a shell stream.
	DefaultMaxSessions = 256
	// tsPacket is the size of an MPEG-TS packet.
	tsPacket = 188
)

// Config is a host agent's configuration: the relay, the tokens and the
// streams. Load reads it from YAML; Validate checks one built in code.
type Config struct {
	// URL is the relay's base URL (http, https, ws or wss). Required.
	URL string
	// TokenFile is the default token file of every stream that names none
	// (typically a token whose topic is a pattern such as "expt42/*").
	TokenFile string
	// StatusListen, if set, is where `switchboard host` serves /status and
	// /metrics.
	StatusListen string
	// Streams are bridged to the relay, each on its own links.
	Streams []StreamConfig
	// Agent, if set, registers the host on the hub's agent control
	// channel and offers its actions (docs/jobs.md).
	Agent *AgentConfig
}

// StreamConfig is one stream. Which fields apply depends on Kind.
type StreamConfig struct {
	Name      string // unique among the streams; [A-Za-z0-9._-]{1,64}
	Kind      string // KindTCP, KindHTTPPush, KindExec or KindShell
	Topic     string // tcp, exec, shell: the topic (a name, not a pattern)
	TokenFile string // overrides Config.TokenFile
	Chunk     int    // largest message sent; 0 means DefaultChunk

	Addr string // tcp: the local service to dial; shell: where each session dials

	Listen string       // http-push: the local HTTP listener, host:port
	Feeds  []FeedConfig // http-push: the feeds

	Command []string          // exec: argv (no shell)
	Env     map[string]string // exec: added to the environment
	Dir     string            // exec: working directory

	MaxSessions int // shell: concurrent sessions; 0 means DefaultMaxSessions
}

// FeedConfig is one feed of an http-push stream: pushes to /ts/{name},
// /push/{name} and the websocket /ws/{name} go to Topic.
type FeedConfig struct {
	Name      string
	Topic     string
	TokenFile string // overrides the stream's and the config's token file
}

// ConfigError is one problem in a configuration, naming its key.
type ConfigError struct {
	Path    string // e.g. "streams[2].addr"; "" for the whole file
	Line    int    // line in the YAML file; 0 if unknown
	Problem string
}

func (e *ConfigError) Error() string {
	switch {
	case e.Path == "":
		return e.Problem
	case e.Line > 0:
		return fmt.Sprintf("%s (line %d): %s", e.Path, e.Line, e.Problem)
	}
	return e.Path + ": " + e.Problem
}

// Overrides replace settings of a configuration file (from command-line
// flags); empty fields leave the file's.
type Overrides struct {
	URL          string
	TokenFile    string // relative to the working directory
	StatusListen string
	// CommandKeys are top-level keys the command reads itself (its other
	// flags' keys, such as log_level): accepted here and left alone.
	CommandKeys []string
}

// LoadConfig reads and validates a YAML configuration file, after applying
// o. Relative paths in the file (token files, commands, directories, the
// agent's state directory) are relative to the file's directory. The error lists every
// problem found, each naming its key.
func LoadConfig(path string, o Overrides) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("host config: %w", err)
	}
	defer f.Close()
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("host config: %w", err)
	}
	if o.TokenFile != "" {
		if o.TokenFile, err = filepath.Abs(o.TokenFile); err != nil {
			return nil, fmt.Errorf("host config: %w", err)
		}
	}
	cfg, err := parseConfig(f, filepath.Dir(abs), o)
	if err != nil {
		return nil, fmt.Errorf("host config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig reads a YAML configuration and validates it with Validate;
// relative paths are resolved against baseDir.
func ParseConfig(r io.Reader, baseDir string) (*Config, error) {
	return parseConfig(r, baseDir, Overrides{})
}

func parseConfig(r io.Reader, baseDir string, o Overrides) (*Config, error) {
	b, err := io.ReadAll(io.LimitReader(r, 4<<20))
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ConfigError{Problem: "empty configuration"}
		}
		return nil, &ConfigError{Problem: err.Error()}
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, &ConfigError{Problem: "more than one YAML document"}
	}
	d := &decoder{commandKeys: o.CommandKeys}
	cfg := d.config(&doc)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	if o.URL != "" {
		cfg.URL = o.URL
	}
	if o.TokenFile != "" {
		cfg.TokenFile = o.TokenFile
	}
	if o.StatusListen != "" {
		cfg.StatusListen = o.StatusListen
	}
	if err := cfg.validate(baseDir, d.lines); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decoder walks the YAML tree, so that every problem can name its key.
type decoder struct {
	errs        []error
	lines       map[string]int // key path → line, for later messages
	commandKeys []string       // top-level keys that are the command's (Overrides.CommandKeys)
}

func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &ConfigError{Path: path, Line: line, Problem: fmt.Sprintf(format, args...)})
}

// mapping calls f for each key of the mapping n whose name is in known, and
// reports unknown and repeated keys.
func (d *decoder) mapping(n *yaml.Node, path string, known []string, f func(key string, v *yaml.Node, p string)) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "want a mapping of keys to values")
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if d.lines == nil {
			d.lines = map[string]int{}
		}
		d.lines[p] = k.Line
		if line, dup := seen[k.Value]; dup {
			d.fail(p, k, "given twice (first on line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		if !slices.Contains(known, k.Value) {
			d.fail(p, k, "unknown key (known keys: %s)", strings.Join(known, ", "))
			continue
		}
		f(k.Value, v, p)
	}
}

func (d *decoder) str(n *yaml.Node, path string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.fail(path, n, "want a string")
		return ""
	}
	return n.Value
}

// list decodes the sequence n at path with item, giving each element its
// path (path[i]) and recording its line for error messages; anything but a
// sequence is an error naming what the list holds.
func (d *decoder) list(n *yaml.Node, path, what string, item func(e *yaml.Node, path string)) {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n, "want a list of %s", what)
		return
	}
	for i, e := range n.Content {
		ep := fmt.Sprintf("%s[%d]", path, i)
		d.lines[ep] = e.Line
		item(e, ep)
	}
}

func (d *decoder) strList(n *yaml.Node, path string) []string {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n, "want a list of strings")
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, e := range n.Content {
		out = append(out, d.str(e, fmt.Sprintf("%s[%d]", path, i)))
	}
	return out
}

func (d *decoder) size(n *yaml.Node, path string) int {
	s := d.str(n, path)
	if s == "" {
		return 0
	}
	v, err := ParseSize(s)
	if err != nil || v == 0 {
		d.fail(path, n, "want a positive size such as 32768, 32KiB or 1MiB, got %q", s)
		return 0
	}
	return v
}

func (d *decoder) int(n *yaml.Node, path string) int {
	s := d.str(n, path)
	if s == "" {
		return 0
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		d.fail(path, n, "want a positive whole number, got %q", s)
		return 0
	}
	return v
}

var (
	topKeys    = []string{"url", "token_file", "status_listen", "streams", "agent"}
	streamKeys = []string{"name", "kind", "topic", "token_file", "chunk", "addr", "listen", "feeds", "command", "env", "dir", "max_sessions"}
	feedKeys   = []string{"name", "topic", "token_file"}
	// kindKeys are the keys each kind accepts besides name, kind and token_file.
	kindKeys = map[string][]string{
		KindTCP:      {"topic", "chunk", "addr"},
		KindHTTPPush: {"chunk", "listen", "feeds"},
		KindExec:     {"topic", "chunk", "command", "env", "dir"},
		KindShell:    {"topic", "chunk", "addr", "max_sessions"},
	}
	kinds = []string{KindTCP, KindHTTPPush, KindExec, KindShell}
)

// TopLevelKeys are the top-level keys of a configuration file that the
// agent reads (the command's own flags may add theirs: Overrides.CommandKeys).
func TopLevelKeys() []string { return slices.Clone(topKeys) }

func (d *decoder) config(doc *yaml.Node) *Config {
	cfg := &Config{}
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	d.mapping(root, "", slices.Concat(topKeys, d.commandKeys), func(key string, v *yaml.Node, p string) {
		switch key {
		case "url":
			cfg.URL = d.str(v, p)
		case "token_file":
			cfg.TokenFile = d.str(v, p)
		case "status_listen":
			cfg.StatusListen = d.str(v, p)
		case "streams":
			d.list(v, p, "streams", func(s *yaml.Node, sp string) { cfg.Streams = append(cfg.Streams, d.stream(s, sp)) })
		case "agent":
			cfg.Agent = d.agent(v, p)
		}
	})
	return cfg
}

func (d *decoder) stream(n *yaml.Node, path string) StreamConfig {
	var s StreamConfig
	given := map[string]*yaml.Node{}
	d.mapping(n, path, streamKeys, func(key string, v *yaml.Node, p string) {
		given[key] = v
		switch key {
		case "name":
			s.Name = d.str(v, p)
		case "kind":
			s.Kind = d.str(v, p)
		case "topic":
			s.Topic = d.str(v, p)
		case "token_file":
			s.TokenFile = d.str(v, p)
		case "chunk":
			s.Chunk = d.size(v, p)
		case "addr":
			s.Addr = d.str(v, p)
		case "listen":
			s.Listen = d.str(v, p)
		case "dir":
			s.Dir = d.str(v, p)
		case "max_sessions":
			s.MaxSessions = d.int(v, p)
		case "command":
			s.Command = d.strList(v, p)
		case "env":
			s.Env = d.env(v, p)
		case "feeds":
			d.list(v, p, "feeds", func(f *yaml.Node, fp string) { s.Feeds = append(s.Feeds, d.feed(f, fp)) })
		}
	})
	// Keys that do not belong to the kind are mistakes, not silently ignored.
	if allowed, ok := kindKeys[s.Kind]; ok {
		for _, k := range streamKeys {
			if v := given[k]; v != nil && k != "name" && k != "kind" && k != "token_file" && !slices.Contains(allowed, k) {
				d.fail(path+"."+k, v, "not a key of kind %s (its keys: name, kind, token_file, %s)", s.Kind, strings.Join(allowed, ", "))
			}
		}
	}
	return s
}

func (d *decoder) feed(n *yaml.Node, path string) FeedConfig {
	var f FeedConfig
	d.mapping(n, path, feedKeys, func(key string, v *yaml.Node, p string) {
		switch key {
		case "name":
			f.Name = d.str(v, p)
		case "topic":
			f.Topic = d.str(v, p)
		case "token_file":
			f.TokenFile = d.str(v, p)
		}
	})
	return f
}

// Validate checks a configuration built in code (relative paths are taken
// relative to the working directory). It returns every problem, each a
// *ConfigError naming its key, joined with errors.Join.
func (c *Config) Validate() error {
	return c.validate("", nil)
}

// validate checks c, resolving relative paths against baseDir (if not
// empty), and fills in defaults.
func (c *Config) validate(baseDir string, lines map[string]int) error {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: path, Line: lineOf(lines, path), Problem: fmt.Sprintf(format, args...)})
	}
	resolve := func(p string) string {
		if p == "" || filepath.IsAbs(p) || baseDir == "" {
			return p
		}
		return filepath.Join(baseDir, p)
	}
	if c.URL == "" {
		fail("url", "required: the relay's base URL, e.g. https://relay.example.org")
	} else if err := checkRelayURL(c.URL); err != nil {
		fail("url", "%v", err)
	}
	checkedTokens := map[string]error{}
	checkToken := func(path, file string) {
		file = resolve(file)
		err, done := checkedTokens[file]
		if !done {
			_, err = readTokenFile(file)
			checkedTokens[file] = err
		}
		if err != nil {
			fail(path, "%v", err)
		}
	}
	if c.TokenFile != "" {
		c.TokenFile = resolve(c.TokenFile)
		checkToken("token_file", c.TokenFile)
	}
	if c.StatusListen != "" {
		if err := checkAddr(c.StatusListen, true); err != nil {
			fail("status_listen", "%v", err)
		}
	}
	if len(c.Streams) == 0 && c.Agent == nil {
		fail("streams", "at least one stream is required (or an agent section)")
	}
	if c.Agent != nil {
		c.validateAgent(fail, resolve, checkToken)
	}
	names := map[string]string{}
	listens := map[string]string{}
	for i := range c.Streams {
		s := &c.Streams[i]
		p := fmt.Sprintf("streams[%d]", i)
		switch {
		case s.Name == "":
			fail(p+".name", "required")
		case !validName(s.Name):
			fail(p+".name", "%q: want 1-64 characters from A-Z a-z 0-9 . _ -", s.Name)
		case names[s.Name] != "":
			fail(p+".name", "%q is also the name of %s", s.Name, names[s.Name])
		default:
			names[s.Name] = p
		}
		if !slices.Contains(kinds, s.Kind) {
			if s.Kind == "" {
				fail(p+".kind", "required: one of %s", strings.Join(kinds, ", "))
			} else {
				fail(p+".kind", "unknown kind %q: want one of %s", s.Kind, strings.Join(kinds, ", "))
			}
			continue
		}
		s.TokenFile = resolve(s.TokenFile)
		if s.TokenFile != "" {
			checkToken(p+".token_file", s.TokenFile)
		}
		if s.Chunk < 0 || s.Chunk > MaxChunk {
			fail(p+".chunk", "%d: want 1 byte to %d MiB", s.Chunk, MaxChunk>>20)
		}
		if s.Chunk == 0 {
			s.Chunk = DefaultChunk
		}
		if s.Kind != KindHTTPPush {
			if s.TokenFile == "" && c.TokenFile == "" {
				fail(p+".token_file", "required (no token_file at the top level)")
			}
			if s.Topic == "" {
				fail(p+".topic", "required")
			} else if err := topic.Valid(s.Topic); err != nil {
				fail(p+".topic", "%q: %v", s.Topic, err)
			}
		}
		switch s.Kind {
		case KindTCP, KindShell:
			if s.Addr == "" {
				fail(p+".addr", "required: the local service's host:port, e.g. 127.0.0.1:9000")
			} else if err := checkAddr(s.Addr, false); err != nil {
				fail(p+".addr", "%v", err)
			}
			if s.Kind == KindShell && s.MaxSessions == 0 {
				s.MaxSessions = DefaultMaxSessions
			}
		case KindHTTPPush:
			if s.Listen == "" {
				fail(p+".listen", "required: the local listener's host:port, e.g. 127.0.0.1:8888")
			} else if err := checkAddr(s.Listen, true); err != nil {
				fail(p+".listen", "%v", err)
			} else if other := listens[s.Listen]; other != "" && !strings.HasSuffix(s.Listen, ":0") {
				fail(p+".listen", "%s is also %s.listen", s.Listen, other)
			} else {
				listens[s.Listen] = p
			}
			if s.Chunk < tsPacket {
				fail(p+".chunk", "%d: want at least %d bytes (one MPEG-TS packet)", s.Chunk, tsPacket)
			}
			if len(s.Feeds) == 0 {
				fail(p+".feeds", "at least one feed is required")
			}
			feeds := map[string]string{}
			for j := range s.Feeds {
				f := &s.Feeds[j]
				fp := fmt.Sprintf("%s.feeds[%d]", p, j)
				switch {
				case f.Name == "":
					fail(fp+".name", "required")
				case !validName(f.Name):
					fail(fp+".name", "%q: want 1-64 characters from A-Z a-z 0-9 . _ -", f.Name)
				case feeds[f.Name] != "":
					fail(fp+".name", "duplicate feed name %q (also %s)", f.Name, feeds[f.Name])
				default:
					feeds[f.Name] = fp
				}
				if f.Topic == "" {
					fail(fp+".topic", "required")
				} else if err := topic.Valid(f.Topic); err != nil {
					fail(fp+".topic", "%q: %v", f.Topic, err)
				}
				f.TokenFile = resolve(f.TokenFile)
				switch {
				case f.TokenFile != "":
					checkToken(fp+".token_file", f.TokenFile)
				case s.TokenFile == "" && c.TokenFile == "":
					fail(fp+".token_file", "required (no token_file on the stream or at the top level)")
				}
			}
		case KindExec:
			if len(s.Command) == 0 || s.Command[0] == "" {
				fail(p+".command", "required: the program and its arguments as a list, e.g. [/usr/bin/cat]")
				break
			}
			if s.Dir != "" {
				s.Dir = resolve(s.Dir)
				if st, err := os.Stat(s.Dir); err != nil {
					fail(p+".dir", "%v", err)
				} else if !st.IsDir() {
					fail(p+".dir", "%s is not a directory", s.Dir)
				}
			}
			if strings.ContainsRune(s.Command[0], filepath.Separator) {
				s.Command[0] = resolve(s.Command[0])
			}
			if lp, err := exec.LookPath(s.Command[0]); err != nil {
				fail(p+".command[0]", "%v", err)
			} else {
				s.Command[0] = lp
			}
			for k := range s.Env {
				if k == "" || strings.ContainsAny(k, "=\x00") {
					fail(p+".env."+k, "%q is not a valid environment variable name", k)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// lineOf returns the line of path's key, or of the nearest enclosing one
// (a missing key is reported at its stream).
func lineOf(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// validName reports whether s is a valid stream or feed name.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkRelayURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL", s)
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return fmt.Errorf("%q: want an http, https, ws or wss URL", s)
	}
	switch {
	case u.Host == "":
		return fmt.Errorf("%q: no host", s)
	case u.User != nil:
		return fmt.Errorf("the URL must not hold credentials: give a token file")
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q: no query or fragment allowed", s)
	}
	return nil
}

// checkAddr checks a host:port; listen addresses may leave out the host
// and use port 0.
func checkAddr(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port, e.g. 127.0.0.1:9000", addr)
	}
	if host == "" && !listen {
		return fmt.Errorf("%q: no host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !listen) {
		return fmt.Errorf("%q: port %q: want 1-65535", addr, port)
	}
	return nil
}

// readTokenFile returns the token held in file, without surrounding space.
// The token itself never appears in an error.
func readTokenFile(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if len(b) > 64<<10 {
		return "", fmt.Errorf("token file %s: larger than 64 KiB", file)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", file)
	}
	if strings.ContainsAny(t, " \t\r\n") {
		return "", fmt.Errorf("token file %s holds more than one word", file)
	}
	return t, nil
}

// ParseSize parses a size in bytes with an optional unit: 32768, 32KiB,
// 1MiB, 1MB.
func ParseSize(s string) (int, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with KiB, MiB, GiB, KB, MB or GB", s)
	}
	return int(n * mult), nil
}
