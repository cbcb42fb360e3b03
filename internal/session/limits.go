package session

import "fmt"

// UserLimitError is a session refused because its user already runs as many
// as one user may (--max-sessions-per-user): the API answers it with 429.
// It is a LimitError too (errors.As finds one).
type UserLimitError struct {
	// Limit is the number of sessions one user may run at once.
	Limit int
}

func (e *UserLimitError) Error() string {
	return fmt.Sprintf("you are running %d sessions, as many as one user may at once; end one to start another", e.Limit)
}

// Unwrap makes a UserLimitError a LimitError as well.
func (e *UserLimitError) Unwrap() error { return &LimitError{e.Error()} }
