package wmforge_test

import (
	"errors"

	"github.com/uuidforge/uuidforge/publisher"
)

func errorsIsInvalid(err error) bool { return errors.Is(err, publisher.ErrInvalid) }
