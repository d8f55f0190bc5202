package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboard-hub/switchboard/internal/servertest"
)

// packagedFile is a file the packages install, with its mode and owner.
type packagedFile struct {
	mode         string // as ls shows it: -rw-r--r--, drwxr-x---
	owner, group string
}

// packaged is what the .deb and .rpm must install (directories that only
// hold these are left out).
var packaged = map[string]packagedFile{
	"/usr/bin/switchboard":                              {"-rwxr-xr-x", "root", "root"},
	"/usr/lib/systemd/system/switchboard.service":       {"-rw-r--r--", "root", "root"},
	"/usr/lib/systemd/system/switchboard-host@.service": {"-rw-r--r--", "root", "root"},
	"/usr/lib/sysusers.d/switchboard.conf":              {"-rw-r--r--", "root", "root"},
	"/etc/switchboard":                                  {"drwxr-x---", "root", "switchboard"},
	"/etc/switchboard/serve.yaml":                       {"-rw-r-----", "root", "switchboard"},
	"/usr/share/doc/switchboard/serve.example.yaml":     {"-rw-r--r--", "root", "root"},
	"/usr/share/doc/switchboard/host.example.yaml":      {"-rw-r--r--", "root", "root"},
	"/usr/share/doc/switchboard/LICENSE":                {"-rw-r--r--", "root", "root"},
}

// TestPackages builds the .deb and the .rpm with nfpm from
// deploy/packaging/nfpm.yaml and the release binary, lists what each
// installs (dpkg-deb, rpm), and checks what the .deb unpacks to: the
// binary runs, /etc/switchboard/serve.yaml is a valid serve configuration,
// and the systemd units pass `systemd-analyze verify` and are hardened
// (`systemd-analyze security`), all on the unpacked tree.
func TestPackages(t *testing.T) {
	dpkgDeb := servertest.Tool(t, "dpkg", "dpkg-deb")
	rpm := servertest.Tool(t, "rpm", "rpm")
	analyze := servertest.Tool(t, "systemd", "systemd-analyze")
	nfpm := goTool(t, "nfpm") // the version deploy/tools.txt pins
	bin := releaseBuild(t)
	root := moduleRoot(t)

	// nfpm reads paths relative to its working directory, the module root
	// with the binary in dist/: a copy of that, not the checkout itself.
	work := t.TempDir()
	for _, dir := range []string{"deploy", "docs"} {
		if err := os.Symlink(filepath.Join(root, dir), filepath.Join(work, dir)); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, filepath.Join(root, "LICENSE"), filepath.Join(work, "LICENSE"), 0o644)
	copyFile(t, bin, filepath.Join(work, "dist", "switchboard"), 0o755)
	out := filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, packager := range []string{"deb", "rpm"} {
		cmd := exec.Command(nfpm, "package", "--config", "deploy/packaging/nfpm.yaml", "--packager", packager, "--target", out+"/")
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "VERSION="+strings.TrimPrefix(releaseVersion, "v"), "GOARCH=amd64")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nfpm package --packager %s: %v\n%s", packager, err, b)
		}
	}
	deb, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	rpmFile, _ := filepath.Glob(filepath.Join(out, "*.rpm"))
	if len(deb) != 1 || len(rpmFile) != 1 {
		t.Fatalf("nfpm made %v and %v, want one .deb and one .rpm", deb, rpmFile)
	}

	t.Run("deb contents", func(t *testing.T) {
		// drwxr-x--- root/switchboard 0 2026-12-03 16:53 ./etc/switchboard/
		line := regexp.MustCompile(`^(\S+) (\S+)/(\S+) +\d+ \S+ \S+ \./(.*?)/?$`)
		got := map[string]packagedFile{}
		for _, l := range strings.Split(strings.TrimSpace(runTool(t, "", dpkgDeb, "-c", deb[0])), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("dpkg-deb -c: unexpected line %q", l)
			}
			got["/"+m[4]] = packagedFile{m[1], m[2], m[3]}
		}
		checkPackaged(t, "the .deb", got)
		if conf := runTool(t, "", dpkgDeb, "-I", deb[0], "conffiles"); strings.TrimSpace(conf) != "/etc/switchboard/serve.yaml" {
			t.Errorf("the .deb's conffiles are %q, want /etc/switchboard/serve.yaml", conf)
		}
		for _, script := range []string{"preinst", "postinst", "postrm"} {
			runTool(t, "", dpkgDeb, "-I", deb[0], script)
		}
	})

	t.Run("rpm contents", func(t *testing.T) {
		// drwxr-x---    2 root     switchbo     0 Dec  3 16:54 /etc/switchboard
		// (rpm cuts owner names to 8 characters: the full ones are asked
		// for below)
		line := regexp.MustCompile(`^(\S+) +\d+ +\S+ +\S+ +\d+ \S+ +\S+ +\S+ (/\S+)( -> .*)?$`)
		owners := map[string][2]string{}
		for _, l := range strings.Split(strings.TrimSpace(runTool(t, "", rpm, "-qp", "--qf", `[%{FILENAMES} %{FILEUSERNAME} %{FILEGROUPNAME}\n]`, rpmFile[0])), "\n") {
			f := strings.Fields(l)
			if len(f) != 3 {
				t.Fatalf("rpm --qf: unexpected line %q", l)
			}
			owners[f[0]] = [2]string{f[1], f[2]}
		}
		got := map[string]packagedFile{}
		for _, l := range strings.Split(strings.TrimSpace(runTool(t, "", rpm, "-qplv", rpmFile[0])), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("rpm -qplv: unexpected line %q", l)
			}
			got[m[2]] = packagedFile{m[1], owners[m[2]][0], owners[m[2]][1]}
		}
		checkPackaged(t, "the .rpm", got)
		if conf := runTool(t, "", rpm, "-qpc", rpmFile[0]); strings.TrimSpace(conf) != "/etc/switchboard/serve.yaml" {
			t.Errorf("the .rpm's configuration files are %q, want /etc/switchboard/serve.yaml", conf)
		}
		if scripts := runTool(t, "", rpm, "-qp", "--scripts", rpmFile[0]); !strings.Contains(scripts, "useradd --system") {
			t.Errorf("the .rpm's scripts do not create the system user:\n%s", scripts)
		}
	})

	// What the .deb unpacks to, with the system's own units beside it so
	// that the dependencies of ours resolve.
	tree := filepath.Join(work, "root")
	runTool(t, "", dpkgDeb, "-x", deb[0], tree)

	t.Run("binary", func(t *testing.T) {
		if out := runTool(t, "", filepath.Join(tree, "usr/bin/switchboard"), "version"); !strings.Contains(out, releaseVersion) {
			t.Errorf("the packaged binary's version is %q, want %s", out, releaseVersion)
		}
	})

	t.Run("serve.yaml", func(t *testing.T) {
		fs := newServeCommand(stdio{}).Flags()
		if err := fs.Parse([]string{"--config", filepath.Join(tree, "etc/switchboard/serve.yaml")}); err != nil {
			t.Fatal(err)
		}
		if err := loadConfigFile(fs, serveFileKeys(fs)); err != nil {
			t.Fatalf("/etc/switchboard/serve.yaml: %v", err)
		}
		// The data directory is the unit's state directory.
		if dir := fs.Lookup("data-dir").Value.String(); dir != "/var/lib/switchboard" {
			t.Errorf("serve.yaml's data_dir is %q, want the unit's StateDirectory /var/lib/switchboard", dir)
		}
	})

	t.Run("systemd units", func(t *testing.T) {
		for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
			if _, err := os.Stat(filepath.Join(dir, "sysinit.target")); err == nil {
				copyTree(t, dir, filepath.Join(tree, "usr/lib/systemd/system"))
				break
			}
		}
		units := []string{"switchboard.service", "switchboard-host@lab1.service"}
		// Any warning (an unknown key, a missing executable) is a failure.
		if out, err := exec.Command(analyze, append([]string{"verify", "--root=" + tree}, units...)...).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		// Exposure, 0 (locked down) to 10: the relay runs with no
		// privileges; the host agent runs the operator's programs.
		for unit, most := range map[string]float64{"switchboard.service": 2, "switchboard-host@lab1.service": 4} {
			out, err := exec.Command(analyze, "security", "--offline=yes", "--root="+tree, "--no-pager", unit).CombinedOutput()
			if err != nil {
				t.Errorf("systemd-analyze security %s: %v\n%s", unit, err, out)
				continue
			}
			m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
			if m == nil {
				t.Errorf("systemd-analyze security %s printed no exposure level:\n%s", unit, out)
				continue
			}
			if level, _ := strconv.ParseFloat(string(m[1]), 64); level > most {
				t.Errorf("%s: exposure level %.1f, want at most %.1f:\n%s", unit, level, most, out)
			}
		}
	})
}

// checkPackaged compares a package's files with packaged.
func checkPackaged(t *testing.T, what string, got map[string]packagedFile) {
	t.Helper()
	for path, want := range packaged {
		if g, ok := got[path]; !ok {
			t.Errorf("%s does not install %s", what, path)
		} else if g != want {
			t.Errorf("%s installs %s as %v, want %v", what, path, g, want)
		}
	}
	var extra []string
	for path, g := range got {
		if _, ok := packaged[path]; !ok && !strings.HasPrefix(g.mode, "d") {
			extra = append(extra, path)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("%s installs files the test does not know: %v", what, extra)
	}
}

// copyFile copies a file, making its directory.
func copyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies the regular files and symbolic links of a directory
// tree into another, keeping files already there.
func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if _, err := os.Lstat(dst); err == nil {
			return nil
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case d.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, dst)
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatal(fmt.Errorf("copy %s: %w", from, err))
	}
}
