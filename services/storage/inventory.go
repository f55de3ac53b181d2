package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
)

// defaultMaxPayload is assumed when the connection does not (yet) know the
// server's limit: the NATS server's default.
const defaultMaxPayload = 1 << 20

// pager is what the inventory needs of the store: satisfied by *disk.Store.
type pager interface {
	Page(after string, limit int) ([]disk.Info, bool)
}

// dater is what the inventory uses, when the store offers it, to date each
// shard (satisfied by *disk.Store): when its file was last written.
type dater interface {
	Written(id string) (time.Time, error)
}

// Inventory request results (label of rehome_storage_inventory_requests_total).
const (
	inventoryOK      = "ok"
	inventoryInvalid = "invalid"
	inventoryError   = "error"
)

// parseInventoryRequest decodes a control.InventoryRequest and applies its
// defaults: an empty body asks for the first page; Limit 0 or above
// control.MaxInventoryPage means the maximum. A body that is not a JSON
// object, a negative limit or an After that is no valid shard id wraps
// model.ErrInvalid.
func parseInventoryRequest(data []byte) (control.InventoryRequest, error) {
	var req control.InventoryRequest
	if len(data) > 0 {
		if err := json.Unmarshal(data, &req); err != nil {
			return req, fmt.Errorf("%w inventory request: %w", model.ErrInvalid, err)
		}
	}
	if req.Limit < 0 {
		return req, fmt.Errorf("%w inventory request: limit %d is negative", model.ErrInvalid, req.Limit)
	}
	if req.Limit == 0 || req.Limit > control.MaxInventoryPage {
		req.Limit = control.MaxInventoryPage
	}
	if req.After != "" {
		if err := model.ValidateShardID(req.After); err != nil {
			return req, fmt.Errorf("inventory request after: %w", err)
		}
	}
	return req, nil
}

// inventoryReply answers one inventory request body with an encoded
// control.Reply: the page of shards after req.After, in id order, with Next
// set to the last id when more remain, each shard dated by its file's
// modification time when p can tell (see dater), and Now the node's clock;
// or a refusal (model.ErrInvalid) for a malformed request. A page whose encoding would exceed maxPayload bytes (the
// bus's message limit) is shortened, Next pointing after its last shard.
// result says how the request was judged (for the metric).
func inventoryReply(p pager, node, bootID string, data []byte, maxPayload int) (reply []byte, result string) {
	req, err := parseInventoryRequest(data)
	if err != nil {
		return control.ErrorReply(err), inventoryInvalid
	}
	shards, more := p.Page(req.After, req.Limit)
	page := control.InventoryPage{Node: node, BootID: bootID, Shards: make([]control.InventoryShard, len(shards)),
		Now: time.Now().UTC()}
	d, dated := p.(dater)
	for i, s := range shards {
		page.Shards[i] = control.InventoryShard{ID: s.ID, Size: s.Size, SHA256: s.SHA256}
		if dated {
			if w, err := d.Written(s.ID); err == nil {
				page.Shards[i].Written = w.UTC() // a shard deleted meanwhile stays undated
			}
		}
	}
	for {
		page.Next = ""
		if more && len(page.Shards) > 0 {
			page.Next = page.Shards[len(page.Shards)-1].ID
		}
		b, err := control.OKReply(page)
		if err != nil {
			return control.ErrorReply(err), inventoryError
		}
		if len(b) <= maxPayload {
			return b, inventoryOK
		}
		if len(page.Shards) <= 1 {
			return control.ErrorReply(errors.New("inventory page does not fit in one bus message")), inventoryError
		}
		page.Shards = page.Shards[:len(page.Shards)/2]
		more = true
	}
}
