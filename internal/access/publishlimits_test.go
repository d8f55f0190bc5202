package access

import (
	"strings"
	"testing"
)

// TestPublishLimitsDefaults: zero values are the documented defaults
// (bursts twice the rates), and a negative value is an error naming its
// flag.
func TestPublishLimitsDefaults(t *testing.T) {
	l, err := PublishLimits{}.withDefaults()
	if err != nil || l != (PublishLimits{PerToken: DefaultPublishPerToken, TokenBurst: 2 * DefaultPublishPerToken,
		PerAddress: DefaultPublishPerAddress, AddressBurst: 2 * DefaultPublishPerAddress}) {
		t.Fatalf("defaults: %+v %v", l, err)
	}
	for flag, bad := range map[string]PublishLimits{
		"--max-publish-per-token": {PerToken: -1}, "--publish-burst-per-token": {TokenBurst: -1},
		"--max-publish-per-address": {PerAddress: -1}, "--publish-burst-per-address": {AddressBurst: -1},
	} {
		if _, err := bad.withDefaults(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%+v: %v, want an error naming %s", bad, err, flag)
		}
	}
}
