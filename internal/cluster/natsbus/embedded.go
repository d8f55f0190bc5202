package natsbus

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Route keepalive: see startServer.
const (
	routePingInterval = 2 * time.Second
	routeMaxPingsOut  = 2
)

// routeUser is the user name every route authenticates with; the password
// is derived from the route secret (routePassword).
const routeUser = "switchboard-route"

// routePassword derives the routes' password from the shared secret. The
// server compares it in constant time; deriving it keeps the secret itself
// out of route URLs and stops a secret that happens to look like a bcrypt
// hash from being taken for one.
func routePassword(secret string) string {
	sum := sha256.Sum256([]byte("switchboard natsbus route password\x00" + secret))
	return hex.EncodeToString(sum[:])
}

// startServer starts the node's embedded nats-server: a route listener on
// o.RouteListen, routes to o.Peers, a max payload that carries
// o.MaxMessage. It returns once the server is ready, with the token its
// clients must present.
//
// The client port: the node talks to its server in process, and no client
// should ever use the port, but nats-server (v2.15.3 and its main branch)
// starts routing only once its client listener is up, so with DontListen
// the routes never start (Start never closes the channel StartRouting
// waits on). So the server listens for clients on a random port of
// 127.0.0.1 only, and requires a random 256-bit token that only this
// process knows.
func startServer(o *Options) (*server.Server, string, error) {
	host, port, err := splitHostPort(o.RouteListen)
	if err != nil {
		return nil, "", fmt.Errorf("natsbus: RouteListen %q: %w", o.RouteListen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	password := routePassword(o.RouteSecret)
	token := rand.Text() + rand.Text() // 2 × 128 bits
	routes := make([]*url.URL, 0, len(o.Peers))
	for _, p := range o.Peers {
		h, pt, err := splitHostPort(p)
		if err != nil || pt == 0 {
			return nil, "", fmt.Errorf("natsbus: peer %q: want HOST:PORT with a port from 1 to 65535", p)
		}
		routes = append(routes, &url.URL{Scheme: "nats-route", User: url.UserPassword(routeUser, password),
			Host: net.JoinHostPort(h, strconv.Itoa(pt))})
	}
	payload := max(int64(DefaultMaxPayload), o.neededPayload())
	sopts := &server.Options{
		ServerName:    o.NodeID,
		Host:          "127.0.0.1", // see above: the client port is loopback only, and token-protected
		Port:          server.RANDOM_PORT,
		Authorization: token,
		NoSigs:        true,
		MaxPayload:    int32(payload),
		Cluster: server.ClusterOpts{
			Name:     o.ClusterName,
			Host:     host,
			Port:     port,
			Username: routeUser,
			Password: password,
			// No client uses the client ports: gossip none of them.
			NoAdvertise: true,
			// A route whose peer went silent (no reset: a partition, a
			// frozen host) is dropped after 2-3 pings and redialled each
			// second (explicit routes, Peers, forever), so routes recover
			// soon after a heal; NATS's default would wait minutes.
			PingInterval: routePingInterval,
			MaxPingsOut:  routeMaxPingsOut,
		},
		Routes: routes,
	}
	if 4*payload > server.MAX_PENDING_SIZE {
		sopts.MaxPending = 4 * payload // room for a few of the largest messages per connection
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, "", fmt.Errorf("natsbus: embedded NATS server: %w", err)
	}
	logger := &serverLogger{log: o.Logger, fatal: make(chan string, 1)}
	srv.SetLogger(logger, false, false)
	srv.Start()
	deadline := time.Now().Add(startTimeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-logger.fatal:
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, "", fmt.Errorf("natsbus: the embedded NATS server did not start: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, "", fmt.Errorf("natsbus: the embedded NATS server was not ready within %v", startTimeout)
		}
	}
	return srv, token, nil
}

// splitHostPort parses HOST:PORT; the host may be empty (every address).
func splitHostPort(hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, errors.New("the port must be a number from 0 to 65535")
	}
	return host, port, nil
}

// serverLogger passes the embedded server's log to slog (notices as Info;
// debug and trace are off) and keeps its fatal errors, which the server
// reports instead of failing Start. The server redacts credentials in the
// URLs it logs.
type serverLogger struct {
	log   *slog.Logger // may be nil
	fatal chan string  // the first fatal error, for startServer
}

func (l *serverLogger) logf(level slog.Level, format string, v []any) {
	if l.log != nil {
		l.log.Log(context.Background(), level, "nats-server: "+strings.TrimSpace(fmt.Sprintf(format, v...)))
	}
}

func (l *serverLogger) Noticef(format string, v ...any) { l.logf(slog.LevelInfo, format, v) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l *serverLogger) Debugf(string, ...any)           {}
func (l *serverLogger) Tracef(string, ...any)           {}

// Fatalf logs an error the server cannot go on with; it does not exit.
func (l *serverLogger) Fatalf(format string, v ...any) {
	l.logf(slog.LevelError, format, v)
	select {
	case l.fatal <- strings.TrimSpace(fmt.Sprintf(format, v...)):
	default:
	}
}
