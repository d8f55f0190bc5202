package control

// GET /api/v1/connections: one page of this node's connections, filtered
// and sorted on the server, with each connection's rates, and deltas: an
// answer carries a cursor, and a request that gives it back as since gets
// in full only the rows that changed since that answer (the others by id
// alone). A dashboard tab showing 100 of 2,000 idle connections thus
// receives a list of ids per poll instead of the whole stats report
// (docs/dashboard.md).

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-hub/switchboard/internal/apierr"
	"github.com/switchboard-hub/switchboard/internal/auth"
)

// ChangesTopic is the system topic of the connections' change notices
// (ChangeNotice): published at every stats period and soon after a connect
// or disconnect, as the stats topic is, while it has readers. A live view
// of GET /api/v1/connections asks for its page again at each, so a tab
// costs its page's changes plus about 50 bytes a notice.
const ChangesTopic = "stats/changes"

// ChangeNotice is the message of ChangesTopic.
type ChangeNotice struct {
	Time        time.Time `json:"time"`
	Connections int       `json:"connections"`
}

// Page sizes of GET /api/v1/connections.
const (
	DefaultConnectionsPage = 100
	MaxConnectionsPage     = 500
)

// rateMinInterval is the shortest interval a rate is measured over: polls
// closer together keep the previous rate (as the stats topic's reader did).
const rateMinInterval = time.Second

// ConnectionRow is one connection of a ConnectionsPage: its report and
// its rates in bytes per second, over the interval between two samples
// (the first: since it connected), null until it has been open for
// rateMinInterval.
type ConnectionRow struct {
	ConnReport
	RateIn  *float64 `json:"rate_in"`
	RateOut *float64 `json:"rate_out"`
}

// ConnectionsPage is the answer of GET /api/v1/connections.
type ConnectionsPage struct {
	// Cursor, given back as since, asks for the rows changed after this
	// answer only.
	Cursor  string `json:"cursor"`
	Total   int    `json:"total"`   // open connections on this node
	Matched int    `json:"matched"` // of them, those the filter matches
	Page    int    `json:"page"`    // 1-based; the last page when the asked one is past the end
	Pages   int    `json:"pages"`   // at least 1
	Size    int    `json:"size"`
	// IDs are the page's connections, in order.
	IDs []string `json:"ids"`
	// Rows are the page's connections in full: all of them, or with since
	// those that changed after the answer that gave that cursor (counters,
	// drops, queued bytes or rates), in the order of IDs.
	Rows []ConnectionRow `json:"rows"`
}

// connectionSorts are the sort keys of GET /api/v1/connections, each a
// comparison of two rows in ascending order.
var connectionSorts = map[string]func(a, b *ConnectionRow) int{
	"topic":   func(a, b *ConnectionRow) int { return strings.Compare(a.Topic, b.Topic) },
	"prefix":  func(a, b *ConnectionRow) int { return strings.Compare(a.Prefix, b.Prefix) },
	"sub":     func(a, b *ConnectionRow) int { return strings.Compare(a.Sub, b.Sub) },
	"booking": func(a, b *ConnectionRow) int { return strings.Compare(a.BookingID, b.BookingID) },
	"remote":  func(a, b *ConnectionRow) int { return strings.Compare(a.RemoteAddr, b.RemoteAddr) },
	"ua":      func(a, b *ConnectionRow) int { return strings.Compare(a.UserAgent, b.UserAgent) },
	"since":   func(a, b *ConnectionRow) int { return a.ConnectedAt.Compare(b.ConnectedAt) },
	"expires": func(a, b *ConnectionRow) int { return cmp.Compare(expiresKey(a), expiresKey(b)) },
	"in":      func(a, b *ConnectionRow) int { return cmp.Compare(a.BytesIn, b.BytesIn) },
	"out":     func(a, b *ConnectionRow) int { return cmp.Compare(a.BytesOut, b.BytesOut) },
	"drops":   func(a, b *ConnectionRow) int { return cmp.Compare(a.Drops.total(), b.Drops.total()) },
	"rate":    func(a, b *ConnectionRow) int { return cmp.Compare(rateKey(a), rateKey(b)) },
	"active":  func(a, b *ConnectionRow) int { return a.LastActivity.Compare(b.LastActivity) },
}

// expiresKey orders a connection without expiry after every other.
func expiresKey(r *ConnectionRow) int64 {
	if r.ExpiresAt.IsZero() {
		return 1<<63 - 1
	}
	return r.ExpiresAt.UnixNano()
}

// rateKey orders connections by their rates in and out; unmeasured first.
func rateKey(r *ConnectionRow) float64 {
	if r.RateIn == nil || r.RateOut == nil {
		return -1
	}
	return *r.RateIn + *r.RateOut
}

func (d DropCounts) total() uint64 {
	return d.QueueHead + d.QueueTail + d.NotPermitted + d.SenderClosed + d.QueueBudget + d.NoReaders + d.BusLost
}

// connectionsQuery is a parsed request of GET /api/v1/connections.
type connectionsQuery struct {
	terms []string // lower case; a row matches when it contains every one
	sort  func(a, b *ConnectionRow) int
	desc  bool
	page  int // 1-based
	size  int
	since *rateCursor
}

func parseConnectionsQuery(r *http.Request, epoch int64) (connectionsQuery, *apierr.Error) {
	q := r.URL.Query()
	for name, vs := range q {
		if len(vs) > 1 {
			return connectionsQuery{}, apierr.New(http.StatusBadRequest, "invalid_parameter", name+" is given more than once")
		}
	}
	out := connectionsQuery{terms: strings.Fields(strings.ToLower(q.Get("q"))), sort: connectionSorts["since"], page: 1, size: DefaultConnectionsPage}
	if s := q.Get("sort"); s != "" {
		if out.sort = connectionSorts[s]; out.sort == nil {
			keys := make([]string, 0, len(connectionSorts))
			for k := range connectionSorts {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			return out, apierr.New(http.StatusBadRequest, "invalid_sort", "sort must be one of "+strings.Join(keys, ", "))
		}
	}
	switch q.Get("dir") {
	case "", "asc":
	case "desc":
		out.desc = true
	default:
		return out, apierr.New(http.StatusBadRequest, "invalid_dir", "dir must be asc (the default) or desc")
	}
	if s := q.Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return out, apierr.New(http.StatusBadRequest, "invalid_page", "page must be a positive integer (1 is the first)")
		}
		out.page = n
	}
	if s := q.Get("size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxConnectionsPage {
			return out, apierr.New(http.StatusBadRequest, "invalid_size", "size must be 1 to "+strconv.Itoa(MaxConnectionsPage))
		}
		out.size = n
	}
	if s := q.Get("since"); s != "" {
		c, ok := parseRateCursor(s)
		if !ok {
			return out, apierr.New(http.StatusBadRequest, "invalid_since", "since must be the cursor of an earlier answer")
		}
		if c.epoch == epoch { // a cursor of an earlier run of the server: every row in full
			out.since = &c
		}
	}
	return out, nil
}

// matches reports whether r contains every term (in its topic, prefix,
// scopes, subject, booking, remote address or user agent).
func (q *connectionsQuery) matches(r *ConnectionRow) bool {
	if len(q.terms) == 0 {
		return true
	}
	hay := strings.ToLower(strings.Join([]string{r.Topic, r.Prefix, strings.Join(r.Scopes, " "), r.Sub, r.BookingID, r.RemoteAddr, r.UserAgent}, "\n"))
	for _, t := range q.terms {
		if !strings.Contains(hay, t) {
			return false
		}
	}
	return true
}

// serveConnections serves GET /api/v1/connections.
func (h *Handler) serveConnections(w http.ResponseWriter, r *http.Request, _ *auth.Claims) {
	q, e := parseConnectionsQuery(r, h.rates.epochOf(h.cfg.Now))
	if e != nil {
		apierr.Write(w, e)
		return
	}
	report := Report(h.cfg.Relay)
	rows := make([]ConnectionRow, len(report))
	for i := range report {
		rows[i].ConnReport = report[i]
	}
	changed, cursor := h.rates.sample(rows, h.cfg.Now())
	page := ConnectionsPage{Cursor: cursor.String(), Total: len(rows), Size: q.size, IDs: []string{}, Rows: []ConnectionRow{}}
	matched := make([]*ConnectionRow, 0, len(rows))
	for i := range rows {
		if q.matches(&rows[i]) {
			matched = append(matched, &rows[i])
		}
	}
	// Report is oldest first (ids ascending): ties keep that order.
	slices.SortStableFunc(matched, func(a, b *ConnectionRow) int {
		if q.desc {
			return q.sort(b, a)
		}
		return q.sort(a, b)
	})
	page.Matched = len(matched)
	page.Pages = max(1, (len(matched)+q.size-1)/q.size)
	page.Page = min(q.page, page.Pages)
	from := (page.Page - 1) * q.size
	for _, row := range matched[min(from, len(matched)):min(from+q.size, len(matched))] {
		page.IDs = append(page.IDs, row.ID)
		if q.since == nil || changed[row.ID] > q.since.gen {
			page.Rows = append(page.Rows, *row)
		}
	}
	if health, ok := h.clusterHealth(); ok {
		w.Header().Set(HeaderHealth, health)
	}
	apierr.WriteJSON(w, http.StatusOK, page)
}

// clusterHealth is the cluster's health as this node sees it, when it has
// a cluster status.
func (h *Handler) clusterHealth() (string, bool) {
	if h.cfg.Cluster == nil {
		return "", false
	}
	health, _ := h.cfg.Cluster.Health()
	return health, true
}

// rateCursor names a sample of a rateSampler: the sampler's epoch (when it
// started, so that a cursor of an earlier run is not taken for one of
// this) and the sample's number.
type rateCursor struct {
	epoch int64
	gen   uint64
}

func (c rateCursor) String() string {
	return strconv.FormatInt(c.epoch, 36) + "." + strconv.FormatUint(c.gen, 10)
}

func parseRateCursor(s string) (rateCursor, bool) {
	e, g, ok := strings.Cut(s, ".")
	if !ok {
		return rateCursor{}, false
	}
	epoch, err1 := strconv.ParseInt(e, 36, 64)
	gen, err2 := strconv.ParseUint(g, 10, 64)
	return rateCursor{epoch: epoch, gen: gen}, err1 == nil && err2 == nil
}

// rateSampler measures each connection's rates between the requests of
// GET /api/v1/connections, and numbers its samples so that an answer can
// leave out what did not change since an earlier one. The zero value is
// ready to use. Its memory is one entry per open connection.
type rateSampler struct {
	mu    sync.Mutex
	epoch int64  // guarded by mu; set by the first use
	gen   uint64 // guarded by mu: the number of the latest sample
	conns map[string]*connSample
}

// connSample is what a rateSampler keeps of one connection.
type connSample struct {
	baseIn, baseOut uint64    // the counters the rates are measured from
	baseAt          time.Time // when they were read
	rateIn, rateOut *float64
	seen            connSeen // what the latest sample saw
	changed         uint64   // the sample that last saw a change
}

// connSeen are the parts of a connection's row that change.
type connSeen struct {
	msgsIn, msgsOut, bytesIn, bytesOut uint64
	drops                              DropCounts
	queued                             int
	rateIn, rateOut                    float64
	rated                              bool
}

// epochOf returns the sampler's epoch, starting it at now() if unused.
func (s *rateSampler) epochOf(now func() time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch == 0 {
		s.epoch = now().UnixNano()
	}
	return s.epoch
}

// sample sets each row's rates at now and returns, by connection id, the
// number of the sample that last saw the row change, and this sample's
// cursor. Connections no longer in rows are forgotten.
func (s *rateSampler) sample(rows []ConnectionRow, now time.Time) (map[string]uint64, rateCursor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch == 0 {
		s.epoch = now.UnixNano()
	}
	s.gen++
	if s.conns == nil {
		s.conns = map[string]*connSample{}
	}
	changed := make(map[string]uint64, len(rows))
	next := make(map[string]*connSample, len(rows))
	for i := range rows {
		r := &rows[i]
		cs := s.conns[r.ID]
		if cs == nil {
			// Its first rates are its averages since it connected (from
			// no bytes then): an idle connection's are 0 from the start
			// instead of changing from unmeasured to 0 at the next sample.
			cs = &connSample{baseAt: r.ConnectedAt, changed: s.gen}
		}
		if dt := now.Sub(cs.baseAt); dt >= rateMinInterval {
			in := float64(r.BytesIn-min(r.BytesIn, cs.baseIn)) / dt.Seconds()
			out := float64(r.BytesOut-min(r.BytesOut, cs.baseOut)) / dt.Seconds()
			cs.rateIn, cs.rateOut = &in, &out
			cs.baseIn, cs.baseOut, cs.baseAt = r.BytesIn, r.BytesOut, now
		}
		r.RateIn, r.RateOut = cs.rateIn, cs.rateOut
		seen := connSeen{msgsIn: r.MessagesIn, msgsOut: r.MessagesOut, bytesIn: r.BytesIn, bytesOut: r.BytesOut,
			drops: r.Drops, queued: r.QueuedBytes, rated: r.RateIn != nil}
		if seen.rated {
			seen.rateIn, seen.rateOut = *r.RateIn, *r.RateOut
		}
		if seen != cs.seen {
			cs.seen = seen
			cs.changed = s.gen
		}
		next[r.ID] = cs
		changed[r.ID] = cs.changed
	}
	s.conns = next
	return changed, rateCursor{epoch: s.epoch, gen: s.gen}
}
