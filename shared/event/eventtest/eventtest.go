// Package eventtest checks event payloads against the JSON Schemas of package
// event (event.Schemas), as a consumer in another language would: for tests
// of publishers and for tools that capture events.
package eventtest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/rehome/rehome/shared/event"
)

// Validator holds every compiled event schema. It is safe for concurrent use.
type Validator struct {
	schemas map[string]*jsonschema.Schema
}

// ErrNoSchema marks a subject that carries no event (event.SchemaName is "").
var ErrNoSchema = errors.New("no event schema for subject")

// New compiles every schema of event.Schemas() as draft 2020-12, asserting
// formats (date-time) too. It fails if any schema is not valid.
func New() (*Validator, error) {
	files, err := fs.Glob(event.Schemas(), "*.json")
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	ids := map[string]string{}
	for _, f := range files {
		b, err := fs.ReadFile(event.Schemas(), f)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", f, err)
		}
		obj, _ := doc.(map[string]any)
		id, _ := obj["$id"].(string)
		if id == "" || path.Base(id) != f {
			return nil, fmt.Errorf("schema %s: $id %q does not end in its file name", f, id)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", f, err)
		}
		ids[f] = id
	}
	v := &Validator{schemas: map[string]*jsonschema.Schema{}}
	for f, id := range ids {
		s, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", f, err)
		}
		v.schemas[f] = s
	}
	return v, nil
}

// Files lists the schema files compiled, by name.
func (v *Validator) Files() []string {
	out := make([]string, 0, len(v.schemas))
	for f := range v.schemas {
		out = append(out, f)
	}
	return out
}

// Validate checks data, the payload of a message on subject, against the
// schema event.SchemaName(subject) names. It returns an error wrapping
// ErrNoSchema for a subject that carries no event, and one naming the subject,
// the schema and what failed for a payload that does not conform.
func (v *Validator) Validate(subject string, data []byte) error {
	name := event.SchemaName(subject)
	if name == "" {
		return fmt.Errorf("%w: %s", ErrNoSchema, subject)
	}
	return v.ValidateAs(name, subject, data)
}

// ValidateAs checks data against the schema file name, whatever the subject
// (which only labels the error).
func (v *Validator) ValidateAs(name, subject string, data []byte) error {
	s := v.schemas[name]
	if s == nil {
		return fmt.Errorf("%w: %s (schema %s missing)", ErrNoSchema, subject, name)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: payload is not JSON: %w", subject, err)
	}
	if err := s.Validate(inst); err != nil {
		return fmt.Errorf("%s does not conform to %s: %w", subject, name, err)
	}
	return nil
}
