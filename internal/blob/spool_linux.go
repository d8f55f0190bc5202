//go:build linux && (amd64 || arm64 || 386 || arm || riscv64 || loong64)

package blob

import (
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// oTmpfile is Linux's O_TMPFILE on these architectures (__O_TMPFILE |
// O_DIRECTORY); the syscall package does not define it.
const oTmpfile = 0o20000000 | syscall.O_DIRECTORY

// createUnnamed opens a new unnamed regular file in dir for reading and
// writing.
func createUnnamed(dir string) (*os.File, error) {
	fd, err := syscall.Open(dir, oTmpfile|syscall.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		if err == syscall.EISDIR || err == syscall.EOPNOTSUPP || err == syscall.EINVAL {
			return nil, errNoSpool // a kernel or file system without O_TMPFILE
		}
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir+"/(unnamed)"), nil
}

// linkUnnamed gives the unnamed file f the name path (linkat through
// /proc/self/fd, as open(2) describes for O_TMPFILE files).
func linkUnnamed(f *os.File, path string) error {
	const atFDCWD, atSymlinkFollow = -100, 0x400
	from, err := syscall.BytePtrFromString("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return err
	}
	to, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	cwd := atFDCWD
	if _, _, e := syscall.Syscall6(syscall.SYS_LINKAT, uintptr(cwd), uintptr(unsafe.Pointer(from)),
		uintptr(cwd), uintptr(unsafe.Pointer(to)), atSymlinkFollow, 0); e != 0 {
		return &os.LinkError{Op: "linkat", Old: f.Name(), New: path, Err: e}
	}
	return nil
}
