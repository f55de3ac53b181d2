package access

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// System is the system account's user (detectors' view of connection
// events). Empty Name: no system account.
type System struct {
	Name     string
	Password string
}

// ServerConf renders the accounts, users and permissions of a NATS server
// configuration: AppAccount with JetStream and users, SystemAccount with sys
// (when named) as the system account. Anonymous clients are refused (no
// no_auth_user). The text is valid both for Options.ProcessConfigString and
// as an `include`d file of nats-server. Passwords must be printable ASCII
// without quotes or backslashes; NewSecret's always are.
func ServerConf(users []User, sys System) (string, error) {
	if len(users) == 0 {
		return "", errors.New("access: no users")
	}
	seen := map[string]bool{}
	var b strings.Builder
	b.WriteString("accounts: {\n  " + AppAccount + ": {\n    jetstream: enabled\n    users: [\n")
	for _, u := range users {
		if err := checkCredential(u.Name, u.Password); err != nil {
			return "", err
		}
		if seen[u.Name] || u.Name == sys.Name {
			return "", fmt.Errorf("access: user %q listed twice", u.Name)
		}
		seen[u.Name] = true
		p, err := PermissionsFor(u.Role, u.Node)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "      { user: %s, password: %s, permissions: {\n", strconv.Quote(u.Name), strconv.Quote(u.Password))
		if len(p.PublishDeny) > 0 {
			fmt.Fprintf(&b, "          publish: { allow: %s, deny: %s }\n", list(p.Publish), list(p.PublishDeny))
		} else {
			fmt.Fprintf(&b, "          publish: { allow: %s }\n", list(p.Publish))
		}
		fmt.Fprintf(&b, "          subscribe: { allow: %s }\n", list(p.Subscribe))
		if p.Responses {
			b.WriteString("          allow_responses: true\n")
		}
		b.WriteString("      } }\n")
	}
	b.WriteString("    ]\n  }\n")
	if sys.Name != "" {
		if err := checkCredential(sys.Name, sys.Password); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  %s: { users: [ { user: %s, password: %s } ] }\n", SystemAccount, strconv.Quote(sys.Name), strconv.Quote(sys.Password))
	}
	b.WriteString("}\n")
	if sys.Name != "" {
		b.WriteString("system_account: " + SystemAccount + "\n")
	}
	return b.String(), nil
}

// list renders subjects as a configuration array of quoted strings (quoted,
// so "$JS..." is not read as a variable).
func list(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// checkCredential refuses names and passwords the configuration or a URL
// could misread.
func checkCredential(name, password string) error {
	if name == "" || password == "" {
		return fmt.Errorf("access: user %q needs a name and a password", name)
	}
	for _, s := range []string{name, password} {
		for _, r := range s {
			if r <= ' ' || r > '~' || strings.ContainsRune(`"'\$:@/`, r) {
				return fmt.Errorf("access: user %q: name and password may hold only printable ASCII without quotes, backslashes, $, :, @ or /", name)
			}
		}
	}
	return nil
}
