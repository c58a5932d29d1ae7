package forge

import (
	"github.com/google/uuid"
)

// Kwargs holds the keyword arguments of a Python-compatible ID. Under
// [SchemePython], a Kwargs value as the last part of [Generator.ID] is
// passed as **kwargs.
type Kwargs map[string]any

func (g *Generator) pythonParts(parts []any) (uuid.UUID, error) {
	if len(parts) == 0 {
		return uuid.Nil, errorf("python scheme: the first part must be the entity type")
	}
	entity, ok := parts[0].(string)
	if !ok {
		return uuid.Nil, errorf("python scheme: entity type is %T, want string", parts[0])
	}
	args := parts[1:]
	var kw Kwargs
	if n := len(args); n > 0 {
		if k, ok := args[n-1].(Kwargs); ok {
			kw = k
			args = args[:n-1]
		}
	}
	return g.PythonID(entity, args, kw)
}

// PythonID returns what uuid-forge 0.1.x (Python)
// generate_uuid_only(entity, *args, config=IDConfig(namespace, salt), **kwargs)
// returns, with the generator's namespace and its secret as the salt.
func (g *Generator) PythonID(entity string, args []any, kwargs map[string]any) (uuid.UUID, error) {
	var salt string
	if g.key != nil {
		salt = g.key().secret
	}
	name, err := PythonName(entity, salt, args, kwargs)
	if err != nil {
		return uuid.Nil, err
	}
	return g.FromName(name), nil
}
