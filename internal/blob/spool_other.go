//go:build !(linux && (amd64 || arm64 || 386 || arm || riscv64 || loong64))

package blob

import "os"

func createUnnamed(string) (*os.File, error) { return nil, errNoSpool }

func linkUnnamed(*os.File, string) error { return errNoSpool }
