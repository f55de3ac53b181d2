package control_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
)

func TestRefusalsKeepTheirKindAcrossTheWire(t *testing.T) {
	cases := []struct {
		err  error
		kind error
	}{
		{fmt.Errorf("object x exists: %w", control.ErrConflict), control.ErrConflict},
		{fmt.Errorf("object x: %w", control.ErrNotFound), control.ErrNotFound},
		{fmt.Errorf("%w layout", model.ErrInvalid), model.ErrInvalid},
	}
	for _, c := range cases {
		err := control.DecodeReply(control.ErrorReply(c.err), nil)
		if !errors.Is(err, c.kind) || err.Error() != c.err.Error() {
			t.Errorf("%v came back as %v", c.err, err)
		}
	}
	b, err := control.OKReply(control.DeleteRequest{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	var got control.DeleteRequest
	if err := control.DecodeReply(b, &got); err != nil || got.Key != "k" {
		t.Fatalf("ok reply: %+v %v", got, err)
	}
	if control.DecodeReply([]byte("garbage"), nil) == nil {
		t.Fatal("garbage reply accepted")
	}
}
