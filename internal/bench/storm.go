package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/switchboard-hub/switchboard/internal/auth"
	"github.com/switchboard-hub/switchboard/pkg/client"
)

// Connection storm: every client of a restarted node reconnecting at once.
// Conns clients, each with its own token (its own subject, as real clients
// have) and by default its own loopback source address (127.0.0.2, …, so
// that the per-address request limit sees them as the different clients
// they are), connect as fast as Parallel at a time lets them, with
// pkg/client. Each connection is held until the whole storm has been
// admitted, as reconnected clients stay, then closed. Reported: admission
// latency (dial start to open websocket: the access request and the
// websocket with the code in two steps, the handshake in one) and every
// refusal by status and error code; a 5xx is a failed storm.

// Defaults of StormOptions.
const (
	DefaultStormConns    = 10_000
	DefaultStormParallel = 1_000
	DefaultStormTopic    = "bench/storm"
	// stormTopics is how many topics the clients share (client i reads
	// TOPIC/t<i mod stormTopics>), as the devices of a node do.
	stormTopics = 100
	// stormDescriptorSpare is what the bench keeps besides one descriptor
	// per held connection.
	stormDescriptorSpare = 256
)

// StormOptions configure Storm.
type StormOptions struct {
	// URL is the relay's base URL (loopback only); Secret signs one token
	// per client. Both required.
	URL    string
	Secret []byte
	// Topic (default bench/storm): client i reads Topic/t<i mod 100>.
	Topic string
	// Conns is the number of clients (default 10,000). Each holds its
	// connection until all are admitted: the bench needs a descriptor per
	// client, and so does the server.
	Conns int
	// Parallel bounds the clients connecting at once (default 1,000).
	Parallel int
	// Sources is the number of loopback source addresses the clients are
	// spread over (default Conns: one address per client). Fewer stands for
	// clients behind shared addresses (NAT), which share the relay's
	// per-address request budget.
	Sources int
	// TwoStep connects with the access request and the code instead of the
	// token in the handshake.
	TwoStep bool
	// ServerPID, if positive, is read for CPU time.
	ServerPID int
}

// StormResult is what Storm measured.
type StormResult struct {
	Scenario string `json:"scenario"` // "storm"
	URL      string `json:"url"`
	Flow     string `json:"flow"` // "one-step" or "two-step"
	Conns    int    `json:"conns"`
	Parallel int    `json:"parallel"`
	Sources  int    `json:"sources"`
	// Admitted counts open websockets; Refused maps "STATUS code" (e.g.
	// "429 rate_limited") to the number of clients so refused; Failed
	// counts other errors (timeouts, resets), FirstFailure is one of them.
	Admitted     int            `json:"admitted"`
	Refused      map[string]int `json:"refused"`
	ServerErrors int            `json:"server_errors"` // refusals with a 5xx status
	Failed       int            `json:"failed"`
	FirstFailure string         `json:"first_failure,omitempty"`
	// StormSec is from the first dial to the last admission or refusal.
	StormSec    float64   `json:"storm_sec"`
	AdmittedPer float64   `json:"admitted_per_sec"`
	AdmissionUS LatencyUS `json:"admission_us"` // admitted clients only
	// ClientCPUSec and ServerCPUSec cover the storm (ServerCPUSec when
	// ServerPID was given).
	ClientCPUSec float64  `json:"client_cpu_sec"`
	ServerCPUSec *float64 `json:"server_cpu_sec,omitempty"`
}

// Storm runs one connection storm; see the comment at the top of the file.
// It returns an error only when the storm could not be run; refusals and
// failures are in the result (StormResult.Err judges them).
func Storm(ctx context.Context, o StormOptions) (StormResult, error) {
	if o.Topic == "" {
		o.Topic = DefaultStormTopic
	}
	if o.Conns <= 0 {
		o.Conns = DefaultStormConns
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultStormParallel
	}
	if o.Sources <= 0 {
		o.Sources = o.Conns
	}
	res := StormResult{Scenario: "storm", URL: o.URL, Flow: "one-step", Conns: o.Conns, Parallel: o.Parallel, Sources: o.Sources, Refused: map[string]int{}}
	if o.TwoStep {
		res.Flow = "two-step"
	}
	if err := CheckLoopbackURL(o.URL); err != nil {
		return res, err
	}
	if len(o.Secret) == 0 {
		return res, errors.New("bench: storm: the relay's secret is needed to mint a token per client")
	}
	if o.Sources > 65_000 {
		return res, fmt.Errorf("bench: storm: %d source addresses: at most 65,000 (127.0.0.2 …)", o.Sources)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && uint64(o.Conns)+stormDescriptorSpare > lim.Cur {
		return res, fmt.Errorf("bench: storm: %d held connections need as many descriptors here (and in the server), but RLIMIT_NOFILE is %d; ask for at most %d", o.Conns, lim.Cur, int(lim.Cur)-stormDescriptorSpare)
	}

	// Tokens first, so that signing is not in the storm.
	tokens := make([]string, o.Conns)
	for i := range tokens {
		t, err := mintToken(o.Secret, o.URL, time.Hour, func(c *auth.Claims) {
			c.Subject = "storm-client-" + strconv.Itoa(i)
			c.Topic, c.Prefix, c.Scopes = o.Topic+"/*", client.DefaultPrefix, []string{auth.ScopeRead}
		})
		if err != nil {
			return res, err
		}
		tokens[i] = t
	}
	// One transport per source address; a websocket takes its connection
	// out of the pool, and a two-step client's access request is on its
	// own address too (its own keep-alive connection, reused by the
	// websocket when idle), as a real client's.
	opts := make([]*client.Options, o.Sources)
	for i := range opts {
		tr := &http.Transport{DialContext: sourceDialer(i).DialContext, MaxIdleConnsPerHost: 1, IdleConnTimeout: 10 * time.Second}
		defer tr.CloseIdleConnections()
		opts[i] = &client.Options{HTTPClient: &http.Client{Transport: tr}, TwoStep: o.TwoStep, Retries: noClientRetries}
	}

	conns := make([]*client.Conn, o.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	type outcome struct {
		latency time.Duration
		err     error
	}
	outcomes := make([]outcome, o.Conns)
	cpu0, _ := ProcCPU(os.Getpid())
	var scpu0 time.Duration
	var serr error
	if o.ServerPID > 0 {
		scpu0, serr = ProcCPU(o.ServerPID)
	}
	start := time.Now()
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	for i := range o.Conns {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			dctx, cancel := context.WithTimeout(ctx, accessOpTimeout)
			defer cancel()
			t0 := time.Now()
			c, err := client.Dial(dctx, o.URL, fmt.Sprintf("%s/t%d", o.Topic, i%stormTopics), tokens[i], opts[i%o.Sources])
			outcomes[i] = outcome{time.Since(t0), err}
			conns[i] = c
		}()
	}
	wg.Wait()
	res.StormSec = time.Since(start).Seconds()
	cpu1, _ := ProcCPU(os.Getpid())
	res.ClientCPUSec = (cpu1 - cpu0).Seconds()
	if o.ServerPID > 0 && serr == nil {
		if scpu1, err := ProcCPU(o.ServerPID); err == nil {
			v := (scpu1 - scpu0).Seconds()
			res.ServerCPUSec = &v
		}
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}

	var admission Histogram
	for _, oc := range outcomes {
		var ae *client.AccessError
		switch {
		case oc.err == nil:
			res.Admitted++
			admission.Record(oc.latency.Nanoseconds())
		case errors.As(oc.err, &ae):
			res.Refused[strings.TrimSpace(fmt.Sprintf("%d %s", ae.Status, ae.Code))]++
			if ae.Status >= 500 {
				res.ServerErrors++
			}
		default:
			res.Failed++
			if res.FirstFailure == "" {
				res.FirstFailure = oc.err.Error()
			}
		}
	}
	res.AdmittedPer = float64(res.Admitted) / res.StormSec
	res.AdmissionUS = latencyUS(&admission)
	return res, nil
}

// Err is nil when every client was admitted.
func (r *StormResult) Err() error {
	if r.Admitted == r.Conns {
		return nil
	}
	return fmt.Errorf("storm: %d of %d clients admitted: %d refused with 5xx, refusals %v, %d failed (%s)",
		r.Admitted, r.Conns, r.ServerErrors, r.Refused, r.Failed, r.FirstFailure)
}

// WriteTable writes r as a human-readable table.
func (r *StormResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("scenario", "storm, %s: %d clients (pkg/client), each with its own token, %d at a time, from %d source addresses, held until all are admitted", r.Flow, r.Conns, r.Parallel, r.Sources)
	row("relay", "%s", r.URL)
	row("admitted", "%d of %d in %.3f s (%.0f per second)", r.Admitted, r.Conns, r.StormSec, r.AdmittedPer)
	refusals := make([]string, 0, len(r.Refused))
	for k, n := range r.Refused {
		refusals = append(refusals, fmt.Sprintf("%s × %d", k, n))
	}
	sort.Strings(refusals)
	if len(refusals) == 0 {
		refusals = append(refusals, "none")
	}
	row("refused", "%d with 5xx; %s", r.ServerErrors, strings.Join(refusals, ", "))
	row("failed", "%d %s", r.Failed, r.FirstFailure)
	row("admission µs", "%s", latencyRow(r.AdmissionUS))
	row("client CPU", "%.2f s", r.ClientCPUSec)
	if r.ServerCPUSec != nil {
		row("server CPU", "%.2f s", *r.ServerCPUSec)
		if r.Admitted > 0 {
			row("server CPU per admission", "%.0f µs", 1e6**r.ServerCPUSec/float64(r.Admitted))
		}
	}
	return tw.Flush()
}
