package halfmsg

// MaxBatchItems is the most messages one batch request (prepare-batch,
// end-batch) may carry; the broker answers more with 400 invalid_request.
const MaxBatchItems = 128

// PrepareBatchBody is the JSON of POST /v1/half-messages:prepare-batch: the
// messages to prepare, each as POST /v1/half-messages takes it.
type PrepareBatchBody struct {
	Messages []PrepareBody `json:"messages"`
}

// Actions of an EndItem.
const (
	ActionCommit   = "commit"
	ActionRollback = "rollback"
)

// EndItem is one message of an end batch: its id and ActionCommit or
// ActionRollback.
type EndItem struct {
	ID     string `json:"id"`
	Action string `json:"action"`
}

// EndBatchBody is the JSON of POST /v1/half-messages:end-batch: the
// messages to commit or roll back, each as .../{id}/commit or
// .../{id}/rollback would.
type EndBatchBody struct {
	Messages []EndItem `json:"messages"`
}

// ItemResult answers one message of a batch request, at its index: Status
// is the HTTP status the single call would have answered (201 for a
// prepare, 200 for an end), with ID and State on success and Error, with the
// same code as the single call's, on failure.
type ItemResult struct {
	ID     string       `json:"id,omitempty"`
	State  State        `json:"state,omitzero"`
	Status int          `json:"status"`
	Error  *ErrorDetail `json:"error,omitempty"`
}

// BatchBody answers a batch request (200 once the request itself is
// valid): one result per message, in the order sent.
type BatchBody struct {
	Results []ItemResult `json:"results"`
}
