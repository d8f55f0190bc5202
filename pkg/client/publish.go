package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/switchboard-hub/switchboard/pkg/wire"
)

// Publish sends one message to topic over HTTP (POST wire.PublishPath),
// without a websocket: text as text/plain, binary as
// application/octet-stream. token must grant write on topic (a session
// token). The answer says how many readers on the receiving node the
// message was queued for and whether it went to the other nodes of a
// cluster. A refusal is an *AccessError (e.g. wire.ErrorMessageTooLarge).
// opts may be nil; its HTTPClient and Header are used.
func Publish(ctx context.Context, baseURL, token, topic string, typ MessageType, data []byte, opts *Options) (wire.PublishResult, error) {
	contentType := "text/plain; charset=utf-8"
	if typ == Binary {
		contentType = "application/octet-stream"
	}
	var res wire.PublishResult
	err := publish(ctx, baseURL, token, "topic="+url.QueryEscape(topic), contentType, data, &res, opts)
	return res, err
}

// PublishBatch sends up to wire.MaxPublishBatch messages, each to its own
// topic, in one request; the results are in the order of items. Either all
// are published or, refused, none is. opts may be nil, as for Publish.
func PublishBatch(ctx context.Context, baseURL, token string, items []wire.PublishItem, opts *Options) ([]wire.PublishResult, error) {
	body, err := json.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("client: publish: %w", err)
	}
	var res []wire.PublishResult
	if err := publish(ctx, baseURL, token, "", "application/json", body, &res, opts); err != nil {
		return nil, err
	}
	return res, nil
}

func publish(ctx context.Context, baseURL, token, query, contentType string, body []byte, out any, opts *Options) error {
	u, err := endpoint(baseURL, strings.TrimPrefix(wire.PublishPath, "/"), "")
	if err != nil {
		return err
	}
	u = strings.TrimSuffix(u, "/")
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if opts != nil {
		for k, v := range opts.Header {
			req.Header[k] = v
		}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	resp, err := opts.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("client: publish: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("client: publish: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return accessError(resp, answer)
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("client: publish: response: %w", err)
	}
	return nil
}
