package wire

// PublishPath is the HTTP publish endpoint (docs/protocol.md, "Publish
// over HTTP"): POST a message, or a batch of them, with a bearer token that
// may write the topics.
const PublishPath = "/api/v1/publish"

// MaxPublishBatch is the most items one batch may hold.
const MaxPublishBatch = 100

// PublishBatchBodyFactor bounds a batch's body: at most this many times
// the relay's message limit (base64 and JSON included).
const PublishBatchBodyFactor = 4

// PublishItem is one message of a JSON publish request: a text message
// (Data) or a binary one (DataB64, standard base64), never both.
type PublishItem struct {
	Topic   string  `json:"topic"`
	Data    *string `json:"data,omitempty"`
	DataB64 *string `json:"data_b64,omitempty"`
}

// PublishResult answers one published message: the number of this node's
// readers it was queued for, and whether it was handed to the bus for
// other nodes' readers (only while some other node reads the topic).
type PublishResult struct {
	Topic     string `json:"topic"`
	Queued    int    `json:"queued"`
	Forwarded bool   `json:"forwarded"`
}
