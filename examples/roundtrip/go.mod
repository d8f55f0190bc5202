module example.com/roundtrip

go 1.26.0

require github.com/switchboard-hub/switchboard v0.0.0

require github.com/coder/websocket v1.8.15 // indirect

// Inside this repository the example builds against the working tree; an
// outside program drops this line and requires a released version:
//
//	go get github.com/switchboard-hub/switchboard/pkg/client@latest
replace github.com/switchboard-hub/switchboard => ../..
