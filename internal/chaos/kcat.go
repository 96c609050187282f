package chaos

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// record is one Kafka record as kcat printed it.
type record struct {
	topic     string
	partition int32
	offset    int64
	key       string
	id        string // the txmsg-id header
	time      time.Time
}

// kcatFormat prints one record per line: partition, offset, timestamp
// (ms), key and headers (n=v,n=v). Keys and header values of the soak hold
// neither tabs, commas nor newlines.
const kcatFormat = "%p\t%o\t%T\t%k\t%h\n"

// readTopic reads every record of topic with kcat, a client that shares no
// code with txmsg, ordered by partition and offset.
func readTopic(ctx context.Context, addr, topic string) ([]record, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", "-C", "-b", addr, "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", kcatFormat)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("chaos: kcat -t %s: %w: %s", topic, err, strings.TrimSpace(stderr.String()))
	}
	return parseKcat(topic, out)
}

// parseKcat parses kcatFormat lines.
func parseKcat(topic string, out []byte) ([]record, error) {
	var recs []record
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 5)
		if len(f) != 5 {
			return nil, fmt.Errorf("chaos: kcat line %q: want 5 fields", line)
		}
		p, err1 := strconv.ParseInt(f[0], 10, 32)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		ms, err3 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("chaos: kcat line %q: bad partition, offset or timestamp", line)
		}
		r := record{topic: topic, partition: int32(p), offset: o, key: f[3], time: time.UnixMilli(ms)}
		for h := range strings.SplitSeq(f[4], ",") {
			if name, value, ok := strings.Cut(h, "="); ok && name == "txmsg-id" {
				r.id = value
			}
		}
		recs = append(recs, r)
	}
	slices.SortStableFunc(recs, func(a, b record) int {
		return cmp.Or(cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
	})
	return recs, nil
}
