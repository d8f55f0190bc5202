package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/switchboard-hub/switchboard/internal/jobproto"
	"github.com/switchboard-hub/switchboard/pkg/client"
	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// SimAgent is a simulated host agent: it opens the agent control channel
// and speaks the job protocol (docs/jobs.md) as its caller scripts it. The
// jobs benchmark runs many of them in one process; tests use it to play
// agents that misbehave.
type SimAgent struct {
	ID      string
	Welcome jobproto.Welcome
	url     string
	token   string
	conn    *client.Conn
	http    *http.Client
}

// DialAgent connects an agent to the hub at url with token and sends
// hello (its Type and Agent are filled in); it returns once welcomed.
func DialAgent(ctx context.Context, url, token string, hello jobproto.Hello, hc *http.Client) (*SimAgent, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	c, err := client.Dial(ctx, url, hello.Agent, token, &client.Options{Prefix: wire.PrefixAgent, HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	a := &SimAgent{ID: hello.Agent, url: strings.TrimSuffix(url, "/"), token: token, conn: c, http: hc}
	hello.Type = jobproto.TypeHello
	if err := a.Send(ctx, hello); err != nil {
		c.CloseNow()
		return nil, err
	}
	m, err := a.Next(ctx)
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	w, ok := m.(*jobproto.Welcome)
	if !ok {
		c.CloseNow()
		return nil, fmt.Errorf("agent %s: expected welcome, got %T", hello.Agent, m)
	}
	a.Welcome = *w
	return a, nil
}

// Send writes one control message.
func (a *SimAgent) Send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return a.conn.Write(ctx, client.Text, b)
}

// SendRaw writes one frame as it is (tests play agents that misbehave).
func (a *SimAgent) SendRaw(ctx context.Context, typ client.MessageType, data []byte) error {
	return a.conn.Write(ctx, typ, data)
}

// SendLog sends output of a run as the host agent does (internal/agent):
// text is whole lines, each ended by '\n'; to a hub that takes log chunks
// (Welcome.LogChunks) in chunks of at most jobproto.MaxLogChunkBytes cut
// at line ends, else in Log messages of at most jobproto.MaxLogLines
// lines.
func (a *SimAgent) SendLog(ctx context.Context, job, stream string, text []byte) error {
	var frame []byte
	for len(text) > 0 {
		n := 0
		if a.Welcome.LogChunks {
			n = bytes.LastIndexByte(text[:min(len(text), jobproto.MaxLogChunkBytes)], '\n') + 1
		} else {
			for lines := 0; lines < jobproto.MaxLogLines && n < len(text); lines++ {
				n += bytes.IndexByte(text[n:], '\n') + 1
			}
		}
		if n <= 0 {
			return errors.New("bench: SendLog takes whole lines of at most jobproto.MaxLogChunkBytes, each ended by a newline")
		}
		var err error
		if a.Welcome.LogChunks {
			frame = jobproto.AppendLogChunk(frame[:0], job, stream, text[:n])
			err = a.conn.Write(ctx, client.Binary, frame)
		} else {
			err = a.Send(ctx, jobproto.Log{Type: jobproto.TypeLog, Job: job, Stream: stream,
				Lines: strings.Split(string(text[:n-1]), "\n")})
		}
		if err != nil {
			return err
		}
		text = text[n:]
	}
	return nil
}

// Next reads the next hub message: *jobproto.Welcome, *Run, *Abort or
// *Ack. Unknown types are skipped.
func (a *SimAgent) Next(ctx context.Context) (any, error) {
	for {
		_, b, err := a.conn.Read(ctx)
		if err != nil {
			return nil, err
		}
		var env jobproto.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			return nil, fmt.Errorf("agent %s: hub sent a non-JSON message: %w", a.ID, err)
		}
		var v any
		switch env.Type {
		case jobproto.TypeWelcome:
			v = new(jobproto.Welcome)
		case jobproto.TypeRun:
			v = new(jobproto.Run)
		case jobproto.TypeAbort:
			v = new(jobproto.Abort)
		case jobproto.TypeAck:
			v = new(jobproto.Ack)
		default:
			continue
		}
		if err := json.Unmarshal(b, v); err != nil {
			return nil, fmt.Errorf("agent %s: malformed %s: %w", a.ID, env.Type, err)
		}
		return v, nil
	}
}

// Upload PUTs an output file of a run and returns the HTTP status.
func (a *SimAgent) Upload(ctx context.Context, job, name string, data []byte) (int, error) {
	sum := sha256.Sum256(data)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut,
		a.url+"/api/v1/jobs/"+job+"/runs/"+a.ID+"/files/"+name, bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("X-Content-SHA256", hex.EncodeToString(sum[:]))
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// FileOf describes data as an uploaded file for a Result.
func FileOf(name string, data []byte) jobproto.File {
	sum := sha256.Sum256(data)
	return jobproto.File{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

// Close closes the channel normally.
func (a *SimAgent) Close() error { return a.conn.Close() }

// CloseNow drops the channel without a close handshake.
func (a *SimAgent) CloseNow() error { return a.conn.CloseNow() }

// errNotAck is returned by AwaitAck for another message.
var errNotAck = errors.New("expected an ack")

// AwaitAck reads messages until the ack of job; other messages are
// returned as an error.
func (a *SimAgent) AwaitAck(ctx context.Context, job string) (*jobproto.Ack, error) {
	m, err := a.Next(ctx)
	if err != nil {
		return nil, err
	}
	ack, ok := m.(*jobproto.Ack)
	if !ok || ack.Job != job {
		return nil, fmt.Errorf("%w for %s, got %T %+v", errNotAck, job, m, m)
	}
	return ack, nil
}
