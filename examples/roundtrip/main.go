// Command roundtrip is an example of a program outside this module using
// Switchboard's Go client (github.com/switchboard-hub/switchboard/pkg/client)
// the way a backend worker and a user's page would: it opens a websocket on a
// topic as a reader, publishes a message to the topic over HTTP (as a worker
// without a websocket does), and prints what the reader receives.
//
//	SWITCHBOARD_TOKEN=$(switchboard token --topic demo) go run . -url http://127.0.0.1:8080 -topic demo
//
// The token must grant read and write on the topic (the default scopes of
// `switchboard token`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/switchboard-hub/switchboard/pkg/client"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "the relay's base URL")
	topic := flag.String("topic", "demo", "topic to publish to and read from")
	message := flag.String("message", "hello from roundtrip", "text to publish")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	flag.Parse()
	token := os.Getenv("SWITCHBOARD_TOKEN")
	if token == "" {
		fmt.Fprintln(os.Stderr, "roundtrip: set SWITCHBOARD_TOKEN to a token with read and write on the topic")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *url, *topic, token, *message); err != nil {
		fmt.Fprintln(os.Stderr, "roundtrip:", err)
		var refused *client.AccessError
		if errors.As(err, &refused) {
			os.Exit(2) // the relay refused the token: retrying will not help
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, url, topic, token, message string) error {
	conn, err := client.Dial(ctx, url, topic, token, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()

	// The reader is registered once Dial returns, so the message published
	// next is queued for it.
	res, err := client.Publish(ctx, url, token, topic, client.Text, []byte(message), nil)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fmt.Printf("published to %s: queued for %d reader(s)\n", res.Topic, res.Queued)

	typ, data, err := conn.Read(ctx)
	if err != nil {
		var closed *client.CloseError
		if errors.As(err, &closed) {
			return fmt.Errorf("the relay closed the connection: %w", err)
		}
		return fmt.Errorf("read: %w", err)
	}
	if typ != client.Text {
		return fmt.Errorf("received a binary message of %d bytes", len(data))
	}
	fmt.Printf("received: %s\n", data)
	return nil
}
