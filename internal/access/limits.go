package access

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Default bounds on what one token or one subject may hold open at once.
// A booking's page opens a handful of connections (video, data, commands)
// and a host agent one per stream; a script that opens thousands with one
// token is a fault or an attack, and on a node with few descriptors it
// would starve everybody else.
const (
	DefaultMaxConnsPerToken   = 100
	DefaultMaxConnsPerSubject = 1000
)

// connLimits counts the open connections of each token and subject.
type connLimits struct {
	perToken, perSubject int

	mu        sync.Mutex
	byToken   map[string]int // guarded by mu; by Grant.Owner
	bySubject map[string]int // guarded by mu; subjects that are not ""
}

func newConnLimits(perToken, perSubject int) *connLimits {
	return &connLimits{perToken: perToken, perSubject: perSubject,
		byToken: map[string]int{}, bySubject: map[string]int{}}
}

// check reports, without taking a place, whether g's token and subject are
// under their limits: the access endpoint refuses early what the exchange
// would refuse.
func (l *connLimits) check(g *Grant) *apierr.Error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fullLocked(g)
}

// acquire takes a place for a connection of g, or refuses with 429. The
// caller must call release once the connection has ended.
func (l *connLimits) acquire(g *Grant) *apierr.Error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.fullLocked(g); e != nil {
		return e
	}
	l.byToken[g.Owner]++
	if g.Subject != "" {
		l.bySubject[g.Subject]++
	}
	return nil
}

func (l *connLimits) release(g *Grant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byToken[g.Owner]--; l.byToken[g.Owner] <= 0 {
		delete(l.byToken, g.Owner)
	}
	if g.Subject != "" {
		if l.bySubject[g.Subject]--; l.bySubject[g.Subject] <= 0 {
			delete(l.bySubject, g.Subject)
		}
	}
}

func (l *connLimits) fullLocked(g *Grant) *apierr.Error {
	if l.byToken[g.Owner] >= l.perToken {
		return apierr.New(http.StatusTooManyRequests, wire.ErrorTooManyConnections,
			"this token has "+strconv.Itoa(l.perToken)+" connections open, the most allowed; close one first")
	}
	if g.Subject != "" && l.bySubject[g.Subject] >= l.perSubject {
		return apierr.New(http.StatusTooManyRequests, wire.ErrorTooManyConnections,
			"this subject has "+strconv.Itoa(l.perSubject)+" connections open, the most allowed; close one first")
	}
	return nil
}
