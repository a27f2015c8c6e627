'use strict';
// Runs a ciphercare conformance plan (tests/testkit/fabric/gateway_plan.py) with the official
// @hyperledger/fabric-gateway client against a Fabric Gateway endpoint and prints the outcomes
// as JSON on stdout. Usage: node conformance.js <plan.json> <host:port>
// Optional in the plan: "events": {"start_block": N, "count": M} reads M chaincode events from
// block N after the steps and reports them.

const fs = require('node:fs');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const { connect, hash, signers, checkpointers } = require('@hyperledger/fabric-gateway');

function deadline(seconds) {
    return () => ({ deadline: Date.now() + seconds * 1000 });
}

function resolveArgs(args, outcomes) {
    return args.map((a) => {
        if (a !== null && typeof a === 'object' && Array.isArray(a.$ref)) {
            const [index, field] = a.$ref;
            const o = outcomes[index];
            if (!o || !o.ok) throw new Error(`step ${index} has no result to reference`);
            return String(JSON.parse(o.result)[field]);
        }
        return String(a);
    });
}

async function main() {
    const [planPath, target] = process.argv.slice(2);
    const plan = JSON.parse(fs.readFileSync(planPath, 'utf8'));
    const client = new grpc.Client(target, grpc.credentials.createInsecure());
    const gateways = {};
    for (const [name, p] of Object.entries(plan.principals)) {
        gateways[name] = connect({
            client,
            identity: { mspId: p.msp_id, credentials: Buffer.from(p.cert_pem) },
            signer: signers.newPrivateKeySigner(crypto.createPrivateKey(p.key_pem)),
            hash: hash.sha256,
            evaluateOptions: deadline(5),
            endorseOptions: deadline(15),
            submitOptions: deadline(5),
            commitStatusOptions: deadline(60),
        });
    }
    const outcomes = [];
    for (const step of plan.steps) {
        const contract = gateways[step.who].getNetwork(plan.channel).getContract(plan.chaincode, step.contract);
        const args = resolveArgs(step.args, outcomes);
        try {
            const result = step.op === 'submit'
                ? await contract.submitTransaction(step.fn, ...args)
                : await contract.evaluateTransaction(step.fn, ...args);
            outcomes.push({ ok: true, result: Buffer.from(result).toString('utf8') });
        } catch (err) {
            const cause = err.cause && typeof err.cause.code === 'number' ? err.cause : err;
            outcomes.push({
                ok: false,
                code: typeof err.code === 'number' ? err.code : cause.code,
                details: (err.details || []).map((d) => d.message),
                error: err.name,
            });
        }
    }
    const report = { outcomes };
    if (plan.events) {
        const first = Object.values(gateways)[0];
        const checkpointer = checkpointers.inMemory();
        const events = [];
        const stream = await first.getNetwork(plan.channel).getChaincodeEvents(plan.chaincode, {
            startBlock: BigInt(plan.events.start_block),
            checkpoint: checkpointer,
        });
        try {
            for await (const ev of stream) {
                events.push({ block: Number(ev.blockNumber), tx_id: ev.transactionId, name: ev.eventName });
                await checkpointer.checkpointChaincodeEvent(ev);
                if (events.length >= plan.events.count) break;
            }
        } finally {
            stream.close();
        }
        report.events = events;
    }
    for (const g of Object.values(gateways)) g.close();
    client.close();
    process.stdout.write(JSON.stringify(report));
}

main().catch((err) => {
    process.stderr.write(`conformance: ${err.stack || err}\n`);
    process.exit(1);
});
