// Package backbone is iotransit's link to NATS JetStream: an embedded
// nats-server (in-process, no network listener) with its file store under
// the data directory, or an external cluster. It provisions streams and KV
// buckets with the configured replication; other packages own what is in
// them.
package backbone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/singleflight"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
)

// Config configures the backbone.
type Config struct {
	// DataDir holds the embedded JetStream store (DataDir/jetstream).
	DataDir string
	// URLs of an external NATS cluster. Empty means embedded.
	URLs []string
	// CredsFile is an optional NATS credentials file for an external cluster.
	CredsFile string
	// Replicas of every stream and bucket: 1 embedded, 3 in a cluster.
	Replicas int
	// SyncAlways makes the embedded server fsync every write before it is
	// acknowledged (survives power loss; costs throughput). Without it, a write
	// reaches the OS before it is acknowledged and JetStream fsyncs every
	// SyncInterval (its default is 2 minutes).
	SyncAlways bool
	// SyncInterval overrides JetStream's periodic fsync interval (0: default, 2m).
	SyncInterval time.Duration
}

// DefaultConfig returns the configuration of an embedded server: one
// replica, JetStream's own fsync interval. DataDir (or URLs) must be set.
func DefaultConfig() Config { return Config{Replicas: 1} }

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if len(c.URLs) == 0 && c.DataDir == "" {
		errs = append(errs, errors.New("backbone: a data directory is required for the embedded server"))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("backbone: replicas %d out of range 1..5", c.Replicas))
	}
	if len(c.URLs) == 0 && c.Replicas != 1 {
		errs = append(errs, errors.New("backbone: the embedded server has one node; replicas > 1 need --nats-url of a cluster"))
	}
	if len(c.URLs) > 0 && (c.SyncAlways || c.SyncInterval != 0) {
		errs = append(errs, errors.New("backbone: fsync settings apply to the embedded server; configure them on the external cluster"))
	}
	return errors.Join(errs...)
}

// Backbone is a connected JetStream.
type Backbone struct {
	cfg Config
	srv *server.Server // nil when external
	NC  *nats.Conn
	JS  jetstream.JetStream

	// create collapses concurrent creations of one stream or bucket: on a
	// cluster, a second create of a stream whose creation is still being
	// proposed can go unanswered until it times out.
	create singleflight.Group
	mu     sync.Mutex
	kvs    map[string]jetstream.KeyValue // buckets made by this process
}

// Start starts the embedded server (or connects to the cluster) and returns
// a ready backbone.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Backbone, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Backbone{cfg: cfg}
	var opts []nats.Option
	opts = append(opts, nats.Name("iotransit"), nats.MaxReconnects(-1))
	url := nats.DefaultURL
	if len(cfg.URLs) == 0 {
		sopts := &server.Options{
			ServerName:   "iotransit",
			DontListen:   true,
			JetStream:    true,
			StoreDir:     filepath.Join(cfg.DataDir, "jetstream"),
			SyncAlways:   cfg.SyncAlways,
			SyncInterval: cfg.SyncInterval,
			NoSigs:       true,
		}
		srv, err := server.NewServer(sopts)
		if err != nil {
			return nil, fmt.Errorf("backbone: new server: %w", err)
		}
		srv.SetLoggerV2(&natsLog{log: log.With("component", "nats")}, false, false, false)
		srv.Start()
		if !srv.ReadyForConnections(30 * time.Second) {
			srv.Shutdown()
			return nil, errors.New("backbone: embedded server not ready after 30s")
		}
		b.srv = srv
		opts = append(opts, nats.InProcessServer(srv))
	} else {
		url = joinURLs(cfg.URLs)
		if cfg.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(cfg.CredsFile))
		}
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("backbone: connect: %w", err)
	}
	b.NC = nc
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(1<<16),
		jetstream.WithPublishAsyncTimeout(10*time.Second),
		jetstream.WithDefaultTimeout(15*time.Second), // replicated stream creation can be slow
	)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("backbone: jetstream: %w", err)
	}
	b.JS = js
	if err := b.Ready(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func joinURLs(urls []string) string {
	s := ""
	for i, u := range urls {
		if i > 0 {
			s += ","
		}
		s += u
	}
	return s
}

// Replicas returns the configured replication factor.
func (b *Backbone) Replicas() int { return b.cfg.Replicas }

// Ready reports whether JetStream answers.
func (b *Backbone) Ready(ctx context.Context) error {
	if b.NC == nil || !b.NC.IsConnected() {
		return errors.New("backbone: not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.JS.AccountInfo(ctx); err != nil {
		return fmt.Errorf("backbone: jetstream not ready: %w", err)
	}
	return nil
}

// Close drains the connection and stops the embedded server.
func (b *Backbone) Close() {
	if b.NC != nil {
		b.NC.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// Stream creates or updates a stream, applying the configured replication.
func (b *Backbone) Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg.Replicas = b.cfg.Replicas
	cfg.Storage = jetstream.FileStorage
	v, err, _ := b.create.Do("stream:"+cfg.Name, func() (any, error) {
		return b.JS.CreateOrUpdateStream(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("backbone: stream %s: %w", cfg.Name, err)
	}
	return v.(jetstream.Stream), nil
}

// KV creates (or opens) a key-value bucket with the configured replication.
func (b *Backbone) KV(ctx context.Context, bucket string, history uint8) (jetstream.KeyValue, error) {
	b.mu.Lock()
	kv, ok := b.kvs[bucket]
	b.mu.Unlock()
	if ok {
		return kv, nil
	}
	v, err, _ := b.create.Do("kv:"+bucket, func() (any, error) {
		return b.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:   bucket,
			History:  history,
			Replicas: b.cfg.Replicas,
			Storage:  jetstream.FileStorage,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("backbone: kv %s: %w", bucket, err)
	}
	kv = v.(jetstream.KeyValue)
	b.mu.Lock()
	if b.kvs == nil {
		b.kvs = map[string]jetstream.KeyValue{}
	}
	b.kvs[bucket] = kv
	b.mu.Unlock()
	return kv, nil
}

// KVWithTTL creates (or opens) a bucket whose keys expire ttl after their
// last write (leases).
func (b *Backbone) KVWithTTL(ctx context.Context, bucket string, ttl time.Duration) (jetstream.KeyValue, error) {
	v, err, _ := b.create.Do("kv:"+bucket, func() (any, error) {
		return b.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bucket, History: 1, TTL: ttl, Replicas: b.cfg.Replicas, Storage: jetstream.FileStorage,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("backbone: kv %s: %w", bucket, err)
	}
	return v.(jetstream.KeyValue), nil
}

// KMSStore creates (or opens) the stream of kms's wrapped keys and returns
// the store over it. The stream allows deleting messages (the store erases
// replaced and destroyed keys), denies purges (a purge removes messages
// without erasing them), keeps every message of a key (a per-subject limit
// would drop old values unerased, and should limits ever be set, DiscardNew
// refuses a key rather than drop one) and is not compressed (erasing
// overwrites a message where it lies in the block file). Reads go to the
// stream leader, not to any replica (no direct get): an erase that looks
// for a key's messages, or a keyring that looks for a shred mark, must not
// read a replica that lags.
func (b *Backbone) KMSStore(ctx context.Context) (kms.StreamStore, error) {
	s, err := b.Stream(ctx, jetstream.StreamConfig{
		Name:        names.KMSStream,
		Description: "kms: wrapped data keys, erased when replaced or destroyed",
		Subjects:    []string{names.KMSKeys},
		DenyDelete:  false,
		DenyPurge:   true,
		AllowDirect: false,
		Discard:     jetstream.DiscardNew,
		Compression: jetstream.NoCompression,
	})
	if err != nil {
		return kms.StreamStore{}, err
	}
	return kms.StreamStore{JS: b.JS, Stream: s, Prefix: names.KMSKeyPrefix}, nil
}

// LegacyKMS returns the KV bucket in which kms kept its wrapped keys
// before KMSStore (names.KMSBucket), or nil when there is none. It never
// makes the bucket.
func (b *Backbone) LegacyKMS(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := b.JS.KeyValue(ctx, names.KMSBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backbone: kv %s: %w", names.KMSBucket, err)
	}
	return kv, nil
}

// DropLegacyKMS deletes the KV bucket LegacyKMS returns (its stream, and
// with it the stream's files); a bucket already gone is fine.
func (b *Backbone) DropLegacyKMS(ctx context.Context) error {
	b.mu.Lock()
	delete(b.kvs, names.KMSBucket)
	b.mu.Unlock()
	err := b.JS.DeleteKeyValue(ctx, names.KMSBucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("backbone: delete kv %s: %w", names.KMSBucket, err)
	}
	return nil
}

// KeyStore adapts a KV bucket to kms.KeyStore.
type KeyStore struct{ KV jetstream.KeyValue }

var _ kms.KeyStore = KeyStore{}

// Get returns a stored key.
func (k KeyStore) Get(ctx context.Context, key string) ([]byte, error) {
	e, err := k.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, kms.ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

// Create stores a key that must not exist yet.
func (k KeyStore) Create(ctx context.Context, key string, value []byte) error {
	_, err := k.KV.Create(ctx, key, value)
	if kverr.Conflict(err) {
		return kms.ErrKeyExists
	}
	return err
}

// natsLog routes nats-server logs to slog at their own levels.
type natsLog struct{ log *slog.Logger }

func (l *natsLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLog) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *natsLog) Tracef(format string, v ...any)  {}
