// Runs a ciphercare conformance plan (tests/testkit/fabric/gateway_plan.py) with the official Go Fabric Gateway
// client (github.com/hyperledger/fabric-gateway) against a Fabric Gateway endpoint and prints the outcomes
// as JSON on stdout, in the same shape as tests/fabric/node/conformance.js.
// Usage: go run . <plan.json> <host:port>
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/hyperledger/fabric-gateway/pkg/client"
	"github.com/hyperledger/fabric-gateway/pkg/hash"
	"github.com/hyperledger/fabric-gateway/pkg/identity"
	"github.com/hyperledger/fabric-protos-go-apiv2/gateway"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

type principal struct {
	MspID   string `json:"msp_id"`
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

type step struct {
	Op       string            `json:"op"`
	Who      string            `json:"who"`
	Contract string            `json:"contract"`
	Fn       string            `json:"fn"`
	Args     []json.RawMessage `json:"args"`
}

type plan struct {
	Channel    string               `json:"channel"`
	Chaincode  string               `json:"chaincode"`
	Principals map[string]principal `json:"principals"`
	Steps      []step               `json:"steps"`
}

type outcome struct {
	OK      bool     `json:"ok"`
	Result  string   `json:"result,omitempty"`
	Code    int      `json:"code,omitempty"`
	Details []string `json:"details,omitempty"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "conformance: "+format+"\n", args...)
	os.Exit(1)
}

func resolve(raw []json.RawMessage, outcomes []outcome) []string {
	args := make([]string, 0, len(raw))
	for _, r := range raw {
		var s string
		if err := json.Unmarshal(r, &s); err == nil {
			args = append(args, s)
			continue
		}
		var ref struct {
			Ref []json.RawMessage `json:"$ref"`
		}
		if err := json.Unmarshal(r, &ref); err != nil || len(ref.Ref) != 2 {
			fail("argument %s is neither a string nor a $ref", string(r))
		}
		var index int
		var field string
		_ = json.Unmarshal(ref.Ref[0], &index)
		_ = json.Unmarshal(ref.Ref[1], &field)
		var result map[string]any
		if err := json.Unmarshal([]byte(outcomes[index].Result), &result); err != nil {
			fail("step %d has no JSON result to reference", index)
		}
		args = append(args, fmt.Sprint(result[field]))
	}
	return args
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: conformance <plan.json> <host:port>")
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	var p plan
	if err := json.Unmarshal(data, &p); err != nil {
		fail("plan: %v", err)
	}
	conn, err := grpc.NewClient(os.Args[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("%v", err)
	}
	defer conn.Close()
	gateways := map[string]*client.Gateway{}
	for name, who := range p.Principals {
		cert, err := identity.CertificateFromPEM([]byte(who.CertPEM))
		if err != nil {
			fail("%s: %v", name, err)
		}
		id, err := identity.NewX509Identity(who.MspID, cert)
		if err != nil {
			fail("%s: %v", name, err)
		}
		key, err := identity.PrivateKeyFromPEM([]byte(who.KeyPEM))
		if err != nil {
			fail("%s: %v", name, err)
		}
		sign, err := identity.NewPrivateKeySign(key)
		if err != nil {
			fail("%s: %v", name, err)
		}
		gw, err := client.Connect(id, client.WithSign(sign), client.WithHash(hash.SHA256), client.WithClientConnection(conn),
			client.WithEvaluateTimeout(5*time.Second), client.WithEndorseTimeout(15*time.Second),
			client.WithSubmitTimeout(5*time.Second), client.WithCommitStatusTimeout(time.Minute))
		if err != nil {
			fail("%s: %v", name, err)
		}
		defer gw.Close()
		gateways[name] = gw
	}
	outcomes := make([]outcome, 0, len(p.Steps))
	for _, st := range p.Steps {
		contract := gateways[st.Who].GetNetwork(p.Channel).GetContractWithName(p.Chaincode, st.Contract)
		args := resolve(st.Args, outcomes)
		var result []byte
		if st.Op == "submit" {
			result, err = contract.SubmitTransaction(st.Fn, args...)
		} else {
			result, err = contract.EvaluateTransaction(st.Fn, args...)
		}
		if err == nil {
			outcomes = append(outcomes, outcome{OK: true, Result: string(result)})
			continue
		}
		s := status.Convert(err)
		details := []string{}
		for _, d := range s.Details() {
			if detail, ok := d.(*gateway.ErrorDetail); ok {
				details = append(details, detail.GetMessage())
			}
		}
		outcomes = append(outcomes, outcome{OK: false, Code: int(s.Code()), Details: details})
	}
	out, _ := json.Marshal(map[string]any{"outcomes": outcomes})
	os.Stdout.Write(out)
}
