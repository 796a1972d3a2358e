package originapi

import (
	"errors"
	"fmt"
	"regexp"
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// reservedNames cannot be claimed: "ipfs" and "ipns" are the subdomain
// gateway's labels, and "changes" would be shadowed by the name-change
// stream, GET /api/v1/names/changes.
var reservedNames = map[string]bool{"ipfs": true, "ipns": true, "changes": true}

// ErrInvalidName is what ValidateName returns, wrapped, for a name that
// cannot be a human name.
var ErrInvalidName = errors.New("not a valid name")

// ValidateName reports whether name can be a human name: a lower-case DNS
// label of at most 63 letters, digits and inner hyphens, not reserved.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("name %q is %w: use 1-63 lower-case letters, digits and inner hyphens", name, ErrInvalidName)
	}
	if reservedNames[name] {
		return fmt.Errorf("name %q is %w: it is reserved", name, ErrInvalidName)
	}
	return nil
}
