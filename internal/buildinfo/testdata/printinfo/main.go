// Command printinfo prints buildinfo.Get() for TestLdflagsOverride.
package main

import (
	"fmt"

	"github.com/switchboard-hub/switchboard/internal/buildinfo"
)

func main() {
	i := buildinfo.Get()
	fmt.Print(i.Version, " ", i.Commit, " ", i.Date)
}
