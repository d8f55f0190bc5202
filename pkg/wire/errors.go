package wire

// ErrorCode is the stable code of a JSON error response,
//
//	{"error": {"code": "token_expired", "message": "token has expired"}}
//
// the thing a client branches on; the message is for people. These are the
// codes of the relay's endpoints (docs/protocol.md, "HTTP errors"): the
// access endpoint, the websocket endpoint and the HTTP front every request
// passes. The admin, jobs and dashboard APIs document their own.
type ErrorCode string

// Refusals of the request itself, before any token is looked at.
const (
	ErrorBadRequest                  ErrorCode = "bad_request"                   // 400: net/http refused the request (request line, Host, a header)
	ErrorHeadersTooLarge             ErrorCode = "headers_too_large"             // 431
	ErrorUnsupportedTransferEncoding ErrorCode = "unsupported_transfer_encoding" // 501
	ErrorUnsupportedHTTPVersion      ErrorCode = "unsupported_http_version"      // 505
	ErrorRateLimited                 ErrorCode = "rate_limited"                  // 429: the client's address is over its request rate; Retry-After
	ErrorOverloaded                  ErrorCode = "overloaded"                    // 503: the node is running out of descriptors; Retry-After
	ErrorDraining                    ErrorCode = "draining"                      // 503 from /readyz: the node is shutting down
	ErrorJoining                     ErrorCode = "joining"                       // 503 from /readyz: the node has not found the cluster yet
	ErrorNotFound                    ErrorCode = "not_found"                     // 404: no endpoint at this path
	ErrorMethodNotAllowed            ErrorCode = "method_not_allowed"            // 405
	ErrorInvalidPath                 ErrorCode = "invalid_path"                  // 400: an empty, "." or ".." segment
	ErrorUnknownPrefix               ErrorCode = "unknown_prefix"                // 404: no such connection type
	ErrorInvalidTopic                ErrorCode = "invalid_topic"                 // 400: the topic breaks the grammar
	ErrorOriginForbidden             ErrorCode = "origin_forbidden"              // 403: the browser's Origin is not allowed
)

// Refusals of the token (access endpoint, 400 and 401).
const (
	ErrorMissingToken           ErrorCode = "missing_token"           // 401: no Authorization header
	ErrorMalformedAuthorization ErrorCode = "malformed_authorization" // 400
	ErrorAuthorizationTooLarge  ErrorCode = "authorization_too_large" // 400
	ErrorTokenMalformed         ErrorCode = "token_malformed"         // 401: not a JWT
	ErrorTokenTooLarge          ErrorCode = "token_too_large"         // 401
	ErrorTokenAlgorithmRefused  ErrorCode = "token_algorithm_refused" // 401: alg is not the configured algorithm
	ErrorTokenSignatureInvalid  ErrorCode = "token_signature_invalid" // 401
	ErrorTokenExpired           ErrorCode = "token_expired"           // 401: exp passed (also checked at code exchange)
	ErrorTokenNotYetValid       ErrorCode = "token_not_yet_valid"     // 401: nbf or iat in the future
	ErrorTokenWrongAudience     ErrorCode = "token_wrong_audience"    // 401
	ErrorTokenMissingClaim      ErrorCode = "token_missing_claim"     // 401: no exp, topic, prefix or scopes
	ErrorTokenInvalidClaim      ErrorCode = "token_invalid_claim"     // 401: topic is not a name or pattern
)

// Refusals of what the token asks for (403), and revocations.
const (
	ErrorTopicForbidden  ErrorCode = "topic_forbidden"  // the token does not grant this topic
	ErrorPrefixForbidden ErrorCode = "prefix_forbidden" // the token is for another connection type
	ErrorScopeForbidden  ErrorCode = "scope_forbidden"  // the token lacks the scope this connection needs
	ErrorAgentForbidden  ErrorCode = "agent_forbidden"  // an agent token's agent claim names another agent
	// ErrorBookingDenied and ErrorTokenRevoked: an operator revoked the
	// booking, or the subject or token. Retrying cannot help; agents back
	// off long.
	ErrorBookingDenied ErrorCode = "booking_denied"
	ErrorTokenRevoked  ErrorCode = "token_revoked"
)

// Refusals of a one-time code and of the websocket handshake (websocket
// endpoint, always before the upgrade), and of issuing a code.
const (
	ErrorCodeMissing          ErrorCode = "code_missing"           // 401
	ErrorCodeMalformed        ErrorCode = "code_malformed"         // 401: not of the form ParseCode accepts
	ErrorCodeInvalid          ErrorCode = "code_invalid"           // 401: unknown or already used
	ErrorCodeExpired          ErrorCode = "code_expired"           // 401: older than the code TTL; request a new one
	ErrorCodeTopicMismatch    ErrorCode = "code_topic_mismatch"    // 403: issued for another topic or prefix
	ErrorCodeWrongNode        ErrorCode = "code_wrong_node"        // 421: the code names another node (a node outside a cluster)
	ErrorCodeNodeUnavailable  ErrorCode = "code_node_unavailable"  // 503: the code's node did not answer in time; retry, or request a new code
	ErrorTooManyCodes         ErrorCode = "too_many_codes"         // 429: too many unused codes; Retry-After
	ErrorCodeStoreUnavailable ErrorCode = "code_store_unavailable" // 503: no code could be issued; retry shortly
	ErrorUpgradeRequired      ErrorCode = "upgrade_required"       // 426: GET without a websocket upgrade
	ErrorBadWebsocketVersion  ErrorCode = "bad_websocket_version"  // 426 (the code is not used up)
	ErrorBadWebsocketKey      ErrorCode = "bad_websocket_key"      // 400 (the code is not used up)
	// ErrorLastEventIDUnsupported (400): an event stream (server-sent
	// events) asked to resume with Last-Event-ID; the relay keeps no
	// history. The code is not used up.
	ErrorLastEventIDUnsupported ErrorCode = "last_event_id_unsupported"
	// ErrorTwoStepRequired (421): a one-step connect (the token in the
	// bearer subprotocol) reached a node of a cluster that cannot serve it,
	// because the connection must meet its peer at the topic's home node (a
	// shell topic's); POST for a code instead, which is issued there.
	ErrorTwoStepRequired ErrorCode = "two_step_required"
)

// Refusals of HTTP publish (PublishPath).
const (
	ErrorUnsupportedMediaType ErrorCode = "unsupported_media_type" // 415: not text/plain, application/octet-stream or application/json
	ErrorInvalidPublish       ErrorCode = "invalid_publish"        // 400: bad JSON, no topic, data and data_b64 both or neither, bad base64, text not UTF-8
	ErrorMessageTooLarge      ErrorCode = "message_too_large"      // 413: a message over the relay's limit, or a batch body over its cap
	ErrorBatchTooLarge        ErrorCode = "batch_too_large"        // 413: more than MaxPublishBatch items
	ErrorTopicReadOnly        ErrorCode = "topic_read_only"        // 403: a system topic, written by the server only
	ErrorPublishNotShared     ErrorCode = "publish_not_shared"     // 403: the token is for a 1:1 connection type (shell, agent): only session topics take HTTP publish
)

// Limits and shell sessions.
const (
	// ErrorTooManyConnections (429): the token or its subject holds as many
	// connections open as it may.
	ErrorTooManyConnections ErrorCode = "too_many_connections"
	// ErrorHostUnavailable (503): a shell user while no host serves the
	// topic; retry later.
	ErrorHostUnavailable ErrorCode = "host_unavailable"
	// ErrorSessionGone (410): a shell session URI used after the session
	// ended.
	ErrorSessionGone ErrorCode = "session_gone"
)
