package main

import (
	"strconv"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/relay"
)

// serverArgsFor returns the arguments of a bench's own server for messages
// of size bytes: args, with --max-message=size added when size is above the
// relay's default limit and args set no limit of their own, so that
// `bench fanout --size 10MiB` needs no --server-arg (the server's send
// queue follows, relay.DefaultSendQueueFor).
func serverArgsFor(args []string, size int) []string {
	if size <= relay.DefaultMaxMessageBytes {
		return args
	}
	for _, a := range args {
		if a == "--max-message" || strings.HasPrefix(a, "--max-message=") {
			return args
		}
	}
	return append(append([]string(nil), args...), "--max-message="+strconv.Itoa(size))
}
