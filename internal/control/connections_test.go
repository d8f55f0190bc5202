package control

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-hub/switchboard/internal/relay"
	"github.com/switchboard-hub/switchboard/internal/servertest/wait"
)

// connectionsHandler is a Handler over rs whose clock is *now.
func connectionsHandler(rs *relay.Server, now *time.Time) *Handler {
	return &Handler{cfg: Config{Relay: rs, Now: func() time.Time { return *now }}}
}

func getConnections(t *testing.T, h *Handler, query url.Values) (int, ConnectionsPage, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.serveConnections(rec, httptest.NewRequest("GET", "/api/v1/connections?"+query.Encode(), nil), nil)
	var page ConnectionsPage
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
			t.Fatalf("%s: %v", rec.Body, err)
		}
	}
	return rec.Code, page, rec.Body.String()
}

func rowIDs(rows []ConnectionRow) []string {
	out := []string{}
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}

// bookingsOf maps the page's ids to their bookings.
func bookingsOf(t *testing.T, rs *relay.Server, ids []string) []string {
	t.Helper()
	byID := map[string]string{}
	for _, c := range Report(rs) {
		byID[c.ID] = c.BookingID
	}
	out := []string{}
	for _, id := range ids {
		out = append(out, byID[id])
	}
	return out
}

// TestConnectionsFilterSortPage: the filter keeps the rows containing
// every term, the sort and direction order them, a page past the end is
// the last one, and bad parameters are JSON errors.
func TestConnectionsFilterSortPage(t *testing.T) {
	rs := relayWithConns(t, 250) // topics t0…t99 (connection i on t{i%100}), bookings b0…b249
	now := time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)
	h := connectionsHandler(rs, &now)

	// "t7 b1": topic t7 or t7x and booking b1…: 107 and 170…179.
	code, page, body := getConnections(t, h, url.Values{"q": {"T7 b1"}, "sort": {"booking"}, "dir": {"desc"}, "size": {"5"}, "page": {"2"}})
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if page.Total != 250 || page.Matched != 11 || page.Pages != 3 || page.Page != 2 || page.Size != 5 {
		t.Errorf("total %d matched %d pages %d page %d size %d, want 250 11 3 2 5", page.Total, page.Matched, page.Pages, page.Page, page.Size)
	}
	if got, want := bookingsOf(t, rs, page.IDs), []string{"b174", "b173", "b172", "b171", "b170"}; !slices.Equal(got, want) {
		t.Errorf("page 2 by booking, descending: %v, want %v", got, want)
	}
	if !slices.Equal(rowIDs(page.Rows), page.IDs) {
		t.Errorf("without since every row is in full: rows %v, ids %v", rowIDs(page.Rows), page.IDs)
	}

	_, page, _ = getConnections(t, h, url.Values{"q": {"t7 b1"}, "sort": {"booking"}, "dir": {"desc"}, "size": {"5"}, "page": {"9"}})
	if got := bookingsOf(t, rs, page.IDs); page.Page != 3 || !slices.Equal(got, []string{"b107"}) {
		t.Errorf("page 9 of 3: page %d %v, want the last page [b107]", page.Page, got)
	}

	// The default: oldest first, 100 a page.
	_, page, _ = getConnections(t, h, url.Values{})
	if page.Matched != 250 || page.Pages != 3 || len(page.IDs) != DefaultConnectionsPage || page.IDs[0] != Report(rs)[0].ID {
		t.Errorf("default page: matched %d pages %d, %d ids starting %v", page.Matched, page.Pages, len(page.IDs), page.IDs[:1])
	}
	_, page, _ = getConnections(t, h, url.Values{"sort": {"topic"}, "size": {"3"}})
	var onT0 []string // t0 sorts first; Report is oldest first
	for _, c := range Report(rs) {
		if c.Topic == "t0" {
			onT0 = append(onT0, c.ID)
		}
	}
	if !slices.Equal(page.IDs, onT0) {
		t.Errorf("by topic, ties oldest first: %v, want %v", page.IDs, onT0)
	}

	for _, bad := range []url.Values{
		{"sort": {"nope"}}, {"dir": {"up"}}, {"page": {"0"}}, {"size": {"501"}}, {"size": {"x"}},
		{"since": {"garbage"}}, {"q": {"a", "b"}},
	} {
		code, _, body := getConnections(t, h, bad)
		if code != 400 || !strings.Contains(body, `"error":{"code":"invalid_`) {
			t.Errorf("%v: %d %s, want a 400 invalid_… JSON error", bad, code, body)
		}
	}
}

// TestConnectionsDeltas: with since, an answer has in full only the rows
// whose counters or rates changed after the answer that gave the cursor;
// rates are bytes per second between samples.
func TestConnectionsDeltas(t *testing.T) {
	rs := relayWithConns(t, 250)
	now := time.Now() // the connections are younger than rateMinInterval: no rates yet
	h := connectionsHandler(rs, &now)
	q := url.Values{"q": {"t7"}} // t7 and t70…t79: 23 connections, 7, 107 and 207 on t7
	_, first, _ := getConnections(t, h, q)
	if first.Matched != 23 || len(first.Rows) != 23 {
		t.Fatalf("matched %d, %d rows, want 23 in full", first.Matched, len(first.Rows))
	}
	for _, r := range first.Rows {
		if r.RateIn != nil || r.RateOut != nil {
			t.Fatalf("a rate before any interval: %+v", r)
		}
	}

	// Every row gets its first rates (0, since it connected) once an
	// interval has passed.
	now = now.Add(2 * time.Second)
	q.Set("since", first.Cursor)
	_, rated, _ := getConnections(t, h, q)
	if len(rated.Rows) != 23 || rated.Rows[0].RateIn == nil || *rated.Rows[0].RateIn != 0 {
		t.Fatalf("%d rows changed (want 23, their first rates)", len(rated.Rows))
	}

	msg := []byte("hello readers")
	if got := rs.Publish("t7", relay.Message{Type: relay.Text, Data: msg}); got != 3 {
		t.Fatalf("published to %d readers, want 3", got)
	}
	wait.For(t, "the message counted on its three readers", func() bool {
		n := 0
		for _, c := range Report(rs) {
			if c.Topic == "t7" && c.BytesOut == uint64(len(msg)) {
				n++
			}
		}
		return n == 3
	})
	now = now.Add(2 * time.Second)
	q.Set("since", rated.Cursor)
	_, second, _ := getConnections(t, h, q)
	if !slices.Equal(second.IDs, first.IDs) {
		t.Fatalf("the page's ids changed: %v then %v", first.IDs, second.IDs)
	}
	if got := bookingsOf(t, rs, rowIDs(second.Rows)); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"b107", "b207", "b7"}) {
		t.Fatalf("changed rows %v, want those of t7's readers", got)
	}
	for _, r := range second.Rows {
		if r.RateIn == nil || *r.RateIn != 0 || r.RateOut == nil || *r.RateOut != float64(len(msg))/2 {
			t.Errorf("rates of %s: %v in, %v out; want 0 and %v B/s", r.BookingID, r.RateIn, r.RateOut, float64(len(msg))/2)
		}
	}

	// Their rates fall back to 0: a change.
	now = now.Add(2 * time.Second)
	q.Set("since", second.Cursor)
	_, third, _ := getConnections(t, h, q)
	if got := bookingsOf(t, rs, rowIDs(third.Rows)); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"b107", "b207", "b7"}) || *third.Rows[0].RateOut != 0 {
		t.Errorf("changed rows %v, want t7's readers, their rates back to 0", got)
	}
	now = now.Add(2 * time.Second)
	q.Set("since", third.Cursor)
	_, fourth, _ := getConnections(t, h, q)
	if len(fourth.Rows) != 0 || len(fourth.IDs) != 23 {
		t.Errorf("nothing changed: %d rows, %d ids; want 0 and 23", len(fourth.Rows), len(fourth.IDs))
	}

	// A cursor of an earlier run of the server gets every row.
	q.Set("since", rateCursor{epoch: 12345, gen: 99}.String())
	_, other, _ := getConnections(t, h, q)
	if len(other.Rows) != 23 {
		t.Errorf("a foreign cursor: %d rows, want all 23", len(other.Rows))
	}
}
