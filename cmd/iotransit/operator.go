package main

import (
	"context"
	"flag"
	"io"
	"strings"

	"github.com/iotransit/iotransit/client"
)

// operatorGroup is "iotransit operator": named operator credentials with
// roles, managed with an operator:admin credential (or the bootstrap key
// of the data directory, until it is retired).
var operatorGroup = &group{
	name:    "operator",
	summary: "named operator credentials with roles: create, list, show, rotate, revoke; retire the bootstrap key (operator:admin)",
	cmds: []command{
		{name: "create", synopsis: "--name N --role operator:ROLE [--ttl 720h]", summary: "create a named operator; its key is shown once",
			flags: func(fs *flag.FlagSet) action {
				var req client.CreateOperatorRequest
				fs.StringVar(&req.Name, "name", "", "the operator's name, as audit entries show it (operator:NAME): a-z, 0-9, '-' and '_' (required)")
				fs.StringVar(&req.Role, "role", "", "the operator's role (required): "+strings.Join(client.Roles, ", "))
				ttl := ttlFlag(fs, "operator key")
				return func(ctx context.Context, e *env, _ []string) error {
					if req.Name == "" || req.Role == "" {
						return usageError("operator create needs --name and --role (%s)", strings.Join(client.Roles, ", "))
					}
					var err error
					if req.TTL, err = ttl(); err != nil {
						return err
					}
					op, err := e.api.CreateOperator(ctx, req)
					if err != nil {
						return err
					}
					return e.show(op, operatorWithKey(*op))
				}
			}},
		{name: "list", summary: "list the named operators (never their keys)",
			run: func(ctx context.Context, e *env, _ []string) error {
				ops, err := e.api.ListOperators(ctx)
				if err != nil {
					return err
				}
				return e.show(client.List[client.Operator]{Items: ops}, operatorTable(ops...))
			}},
		operatorCmd("show", "show a named operator", (*client.Client).GetOperator, operatorTable),
		operatorCmd("rotate", "give an operator a new key, shown once; the old one stops at once", (*client.Client).RotateOperator,
			func(ops ...client.Operator) func(io.Writer) error { return operatorWithKey(ops[0]) }),
		operatorCmd("revoke", "revoke a named operator at once", (*client.Client).RevokeOperator, operatorTable),
		{name: "retire-bootstrap", summary: "make the data directory's operator.key stop working on every node (needs an active operator:admin)",
			run: func(ctx context.Context, e *env, _ []string) error {
				b, err := e.api.RetireBootstrapOperator(ctx)
				if err != nil {
					return err
				}
				return e.show(b, rows([]string{"RETIRED", "AT", "BY"}, []client.BootstrapOperator{*b}, func(b client.BootstrapOperator) []string {
					return []string{"yes", fmtTime(b.RetiredAt), b.RetiredBy}
				}))
			}},
	},
}

// operatorCmd is a command on one named operator, named by its id.
func operatorCmd(name, summary string, call func(c *client.Client, ctx context.Context, id string) (*client.Operator, error), table func(...client.Operator) func(io.Writer) error) command {
	return command{name: name, args: []string{"id"}, summary: summary,
		run: func(ctx context.Context, e *env, args []string) error {
			op, err := call(e.api, ctx, args[0])
			if err != nil {
				return err
			}
			return e.show(op, table(*op))
		}}
}

// operatorWithKey writes an operator and its key, shown once.
func operatorWithKey(op client.Operator) func(w io.Writer) error {
	return func(w io.Writer) error {
		if err := operatorTable(op)(w); err != nil {
			return err
		}
		printSecret(w, "Operator key", op.Key)
		return nil
	}
}

// operatorTable writes named operators, one a row.
func operatorTable(ops ...client.Operator) func(w io.Writer) error {
	return rows([]string{"ID", "NAME", "ROLE", "EXPIRES", "ROTATED", "REVOKED"}, ops, func(op client.Operator) []string {
		return []string{op.ID, op.Name, op.Role, fmtExpiry(op.ExpiresAt), fmtTime(op.RotatedAt), fmtTime(op.RevokedAt)}
	})
}
