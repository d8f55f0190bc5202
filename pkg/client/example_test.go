package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/internal/server"
	"github.com/switchboard-hub/switchboard/internal/store/sqlite"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Example starts a relay on a loopback port, connects two clients to the
// topic "demo" and sends a message from one to the other.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	secret := []byte("an example secret of 32 bytes...")
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(ctx, filepath.Join(dir, "switchboard.db"), sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	relay, err := server.New(server.Config{Listen: "127.0.0.1:0", Secret: secret, NodeID: "n1"}, server.Deps{Store: db})
	if err == nil {
		err = relay.Start()
	}
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Shutdown(ctx)

	// A booking system would mint this token; see `switchboard token`.
	key, _ := auth.NewHMACKey("HS256", secret)
	token, _ := key.Sign(auth.Claims{
		Topic: "demo", Prefix: "session", Scopes: []string{"read", "write"},
		RegisteredClaims: jwt.RegisteredClaims{
			Audience:  jwt.ClaimStrings{relay.PublicURL()},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
		},
	})

	alice, err := client.Dial(ctx, relay.PublicURL(), "demo", token, nil)
	if err != nil {
		log.Fatal(err) // a *client.AccessError says why the relay refused
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, relay.PublicURL(), "demo", token, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()
	for relay.Relay().Stats().Connections < 2 && ctx.Err() == nil { // both registered with the relay
		time.Sleep(time.Millisecond)
	}

	if err := alice.Write(ctx, client.Text, []byte("hello, bob")); err != nil {
		log.Fatal(err)
	}
	typ, data, err := bob.Read(ctx)
	if err != nil {
		log.Fatal(err) // a *client.CloseError carries the close code
	}
	fmt.Println(typ == client.Text, string(data))
	// Output: true hello, bob
}
