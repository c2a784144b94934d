package updater

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/client"
)

// fetcher is the TUF client's Fetcher: it reads the gateway's tenant's
// repository through the API over mutual TLS (client.GatewayTUF and
// GatewayFirmwareImage), never more than the length the TUF client allows.
type fetcher struct {
	ctx  context.Context
	c    *client.Client
	base string
	// last is the length of the last target download (-1: none), and
	// target whether the last download was one: a short one is a
	// truncated download, not a forged one.
	last   int64
	target bool
}

// DownloadFile fetches the metadata file or target that urlPath names
// under the base the updater was configured with.
func (f *fetcher) DownloadFile(urlPath string, maxLength int64, _ time.Duration) ([]byte, error) {
	rest, ok := strings.CutPrefix(urlPath, f.base)
	if !ok {
		return nil, &metadata.ErrDownload{Msg: "a URL outside the repository"}
	}
	var b []byte
	var err error
	name, isTarget := strings.CutPrefix(rest, "targets/")
	f.target = isTarget
	if isTarget {
		b, err = f.c.GatewayFirmwareImage(f.ctx, name, maxLength)
		if err == nil {
			f.last = int64(len(b))
		}
	} else {
		b, err = f.c.GatewayTUF(f.ctx, rest, maxLength)
	}
	if errors.Is(err, client.ErrAnswerTooLarge) {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: "longer than " + rest + " may be"}
	}
	var p *client.Problem
	if errors.As(err, &p) {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: p.Status, URL: rest}
	}
	if err != nil {
		return nil, &metadata.ErrDownload{Msg: err.Error()}
	}
	return b, nil
}
