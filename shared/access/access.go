// Package access says who may do what on rehome's bus: one NATS user per
// role (and one per storage node), each with publish and subscribe
// permissions that let it do its job and nothing else, and the NATS server
// configuration that enforces them. The same configuration text serves the
// embedded server of `rehome dev` and the NATS cluster of the compose stack,
// so what the tests prove is what the stack runs.
//
// The package is pure: it renders permissions and configuration; it neither
// connects nor stores anything.
package access

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Role is the job a bus user does.
type Role string

// The roles. Admin creates and updates streams and buckets (the bootstrap of
// `rehome dev` and of the stack); everyone else works inside them.
const (
	Storage  Role = "storage"
	Detector Role = "detector"
	Planner  Role = "planner"
	Mover    Role = "mover"
	Operator Role = "operator"
	// S3 is the S3 gateway: a client of the planner and the storage nodes,
	// keeper of its own state bucket (S3 buckets, multipart uploads).
	S3    Role = "s3"
	Admin Role = "admin"
)

// Roles lists every role, in a stable order.
var Roles = []Role{Storage, Detector, Planner, Mover, Operator, S3, Admin}

// Account names of the server configuration.
const (
	// AppAccount holds rehome's streams, buckets and users (JetStream on).
	AppAccount = "REHOME"
	// SystemAccount holds the server's own events ($SYS.>), which detectors
	// read to notice a closed connection.
	SystemAccount = "SYS"
)

// User is one bus identity. Node is set for Storage only: a storage node's
// user may speak only for that node.
type User struct {
	Name     string
	Password string
	Role     Role
	Node     string
}

// UserName returns the user name of role (and node, for Storage; the
// instance, for S3): the role itself, "node-<id>" for a storage node, or
// "gateway-<instance>" for one S3 gateway of several.
func UserName(role Role, node string) string {
	switch {
	case role == Storage:
		return "node-" + node
	case role == S3 && node != "":
		return "gateway-" + node
	}
	return string(role)
}

// NewUser returns the user of role (node for Storage) with a fresh random
// password. It fails on an unknown role or an invalid node id.
func NewUser(role Role, node string) (User, error) {
	if _, err := PermissionsFor(role, node); err != nil {
		return User{}, err
	}
	pw, err := NewSecret()
	if err != nil {
		return User{}, err
	}
	return User{Name: UserName(role, node), Password: pw, Role: role, Node: node}, nil
}

// NewSecret returns 24 random bytes in hex: a password or a token.
func NewSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// URL returns natsURL with u's credentials in it. A natsURL with a list of
// servers (comma-separated) gets them in every entry.
func (u User) URL(natsURL string) string {
	parts := strings.Split(natsURL, ",")
	for i, p := range parts {
		pu, err := url.Parse(strings.TrimSpace(p))
		if err != nil || pu.Host == "" {
			continue
		}
		pu.User = url.UserPassword(u.Name, u.Password)
		parts[i] = pu.String()
	}
	return strings.Join(parts, ",")
}

// Permissions is what one user may publish and subscribe to. Responses lets
// it answer requests it received (publish to their reply subjects) without
// a grant on the whole inbox space.
type Permissions struct {
	Publish   []string
	Subscribe []string
	Responses bool
	// PublishDeny carves exceptions out of Publish (deny wins).
	PublishDeny []string
}

// everything is the admin's grant.
const everything = ">"

// consumerAPI returns the JetStream API subjects that create, read, pull
// from and acknowledge consumer (any consumer when empty) on stream.
func consumerAPI(stream, consumer string) []string {
	c := consumer
	if c == "" {
		c = "*"
	}
	return []string{
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.DURABLE.CREATE." + stream + "." + c,
		"$JS.API.CONSUMER.INFO." + stream + "." + c,
		"$JS.API.CONSUMER.DELETE." + stream + "." + c,
		"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + c,
		"$JS.ACK." + stream + ".>",
		"$JS.FC." + stream + ".>",
	}
}

// durableGuard returns the subjects that would let a user other than its
// owner read from, acknowledge, change or delete durable consumer on stream
// (steal the planner's results, say), for PublishDeny.
func durableGuard(stream, durable string) []string {
	return []string{
		"$JS.API.CONSUMER.*." + stream + "." + durable,
		"$JS.API.CONSUMER.*." + stream + "." + durable + ".>",
		"$JS.API.CONSUMER.DURABLE.CREATE." + stream + "." + durable,
		"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + durable,
		"$JS.ACK." + stream + "." + durable + ".>",
	}
}

// kvStream is the stream behind a KV bucket.
func kvStream(bucket string) string { return "KV_" + bucket }

// buckets lists every KV bucket.
var buckets = []string{bus.BucketNodes, bus.BucketLiveness, bus.BucketPlacement, bus.BucketObjects,
	bus.BucketDetector, bus.BucketControl, bus.BucketLease, bus.BucketIndex, bus.BucketS3}

// reader is what every role may do: look streams and buckets up, read keys
// and watch buckets (ordered consumers), and read the events and heartbeat
// streams. It grants no write to any stream or bucket and no access to the
// task queue.
func reader() []string {
	p := []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO.*",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.LIST",
		"$JS.API.STREAM.MSG.GET.*",
		"$JS.API.DIRECT.GET.>",
	}
	for _, b := range buckets {
		p = append(p, consumerAPI(kvStream(b), "")...)
	}
	p = append(p, consumerAPI(bus.StreamEvents, "")...)
	p = append(p, consumerAPI(bus.StreamHeartbeats, "")...)
	return p
}

// kvWrite is the publish subject that puts or deletes key in bucket ("*" or
// ">" for any key).
func kvWrite(bucket, key string) string { return "$KV." + bucket + "." + key }

// inbox is where replies to a user's own requests arrive.
const inbox = "_INBOX.>"

// PermissionsFor returns the grants of role (node for Storage).
//
//   - storage: heartbeats, corruption reports, disk conditions and its nodes-bucket record
//     only for its own node; answers inventory requests for its own node.
//   - detector: verdicts (rehome.node.>), hold notices, liveness records and
//     the guard's state; reads heartbeats.
//   - planner: plans, tasks, lost-shard, heal and drain events; the map,
//     manifests and lease; drain and removed records, and deleting a
//     removed node's registration and liveness; serves operator requests
//     (rehome.ctl.>) and asks nodes for their inventory; manages the task
//     queue.
//   - mover: results and dead letters; consumes the task queue.
//   - s3: the object calls to the planner (allocate, commit, delete,
//     compose) and its own state bucket; reads like everyone.
//   - operator: reads everything; publishes only operator requests
//     (rehome.ctl.>) and its switches (heal pause, detector release, node
//     maintenance).
//   - admin: everything (creates and updates streams and buckets).
//
// Every role may read keys and watch buckets and reply to its own requests;
// none but the planner may touch the planner's durable consumer of results.
func PermissionsFor(role Role, node string) (Permissions, error) {
	switch {
	case role == Storage:
		if err := model.ValidateNodeID(node); err != nil {
			return Permissions{}, fmt.Errorf("storage user: %w", err)
		}
	case role == S3 && node != "": // one user per gateway instance
		if err := model.ValidateNodeID(node); err != nil {
			return Permissions{}, fmt.Errorf("s3 user: instance: %w", err)
		}
	case node != "":
		return Permissions{}, fmt.Errorf("%s user: a node id is only for storage users (and S3 gateway instances)", role)
	}
	p := Permissions{Subscribe: []string{inbox}}
	switch role {
	case Storage:
		p.Publish = []string{
			event.HeartbeatPrefix + node,
			event.CorruptPrefix + node,
			event.ConditionPrefix + node,
			kvWrite(bus.BucketNodes, node),
		}
		p.Subscribe = append(p.Subscribe, control.InventoryPrefix+node)
		p.Responses = true
	case Detector:
		p.Publish = []string{
			"rehome.node.>", "rehome.detector.>",
			kvWrite(bus.BucketLiveness, ">"), kvWrite(bus.BucketDetector, model.HoldKey),
		}
		p.Subscribe = append(p.Subscribe, event.HeartbeatPrefix+"*")
	case Planner:
		p.Publish = []string{
			event.PlanPrefix + ">", event.TaskPrefix + ">", event.LostPrefix + ">", "rehome.heal.>",
			event.DrainingPrefix + "*", event.DrainedPrefix + "*",
			control.InventoryPrefix + "*",
			kvWrite(bus.BucketControl, control.DrainKeyPrefix+">"), kvWrite(bus.BucketControl, control.RemovedKeyPrefix+">"),
			kvWrite(bus.BucketNodes, ">"), kvWrite(bus.BucketLiveness, ">"),
			kvWrite(bus.BucketPlacement, ">"), kvWrite(bus.BucketObjects, ">"), kvWrite(bus.BucketLease, ">"),
			kvWrite(bus.BucketIndex, ">"),
			"$JS.API.STREAM.MSG.DELETE." + bus.StreamTasks,
		}
		p.Publish = append(p.Publish, consumerAPI(bus.StreamTasks, "")...)
		p.Subscribe = append(p.Subscribe, event.HeartbeatPrefix+"*", event.ControlPrefix+">")
		p.Responses = true
	case Mover:
		p.Publish = []string{
			event.DonePrefix + ">", event.FailedPrefix + ">", event.DeadPrefix + ">",
			"$JS.API.STREAM.MSG.DELETE." + bus.StreamTasks,
		}
		p.Publish = append(p.Publish, consumerAPI(bus.StreamTasks, bus.MoverConsumer)...)
		p.Subscribe = append(p.Subscribe,
			"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+bus.StreamTasks+"."+bus.MoverConsumer)
	case Operator:
		p.Publish = []string{
			event.ControlPrefix + ">",
			kvWrite(bus.BucketControl, ">"),
			kvWrite(bus.BucketDetector, model.OverrideKey),
			kvWrite(bus.BucketLiveness, "*"),
		}
		p.Subscribe = append(p.Subscribe, event.Root+".>")
	case S3:
		p.Publish = []string{
			event.CtlAllocate, event.CtlCommit, event.CtlDelete, event.CtlCompose,
			kvWrite(bus.BucketS3, ">"),
		}
	case Admin:
		return Permissions{Publish: []string{everything}, Subscribe: []string{everything}, Responses: true}, nil
	default:
		return Permissions{}, fmt.Errorf("unknown role %q (want one of %v)", role, Roles)
	}
	p.Publish = append(p.Publish, reader()...)
	if role != Planner {
		p.PublishDeny = durableGuard(bus.StreamEvents, bus.PlannerConsumer)
	}
	if role == Planner {
		// The planner bootstraps the bus in the stack (Ensure): it may
		// create and update rehome's streams, never delete or purge them.
		p.Publish = append(p.Publish, "$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.UPDATE.*")
	}
	slices.Sort(p.Publish)
	p.Publish = slices.Compact(p.Publish)
	return p, nil
}
