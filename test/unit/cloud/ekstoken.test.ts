import t from "tap";
import { decodeEksToken, eksToken, stsHost } from "../../../src/cloud/ekstoken.js";
import { sigv4PresignedSignature, verifyEksToken } from "../../../src/sim/kube-api.js";

// AWS's documented example key pair; a fixed clock makes the signature a known answer.
const creds = {
  accessKeyId: "AKIDEXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
  sessionToken: "session/token+value=",
};
const signedAt = new Date("2024-01-02T03:04:05Z");

t.test(
  "known answer: the presigned STS GetCallerIdentity URL has STS's documented parameters",
  async (t) => {
    const tok = await eksToken({
      clusterName: "demo",
      region: "us-west-2",
      credentials: creds,
      now: signedAt,
    });
    t.ok(tok.token.startsWith("k8s-aws-v1."), "prefix");
    const b64 = tok.token.slice("k8s-aws-v1.".length);
    t.match(b64, /^[A-Za-z0-9_-]+$/, "unpadded base64url (no =, + or /)");
    t.equal(Buffer.from(b64, "base64url").toString(), tok.url);
    const url = decodeEksToken(tok.token)!;
    t.equal(url.protocol, "https:");
    t.equal(url.host, "sts.us-west-2.amazonaws.com");
    t.equal(url.pathname, "/");
    const q = Object.fromEntries(url.searchParams);
    t.same(Object.keys(q).sort(), [
      "Action",
      "Version",
      "X-Amz-Algorithm",
      "X-Amz-Credential",
      "X-Amz-Date",
      "X-Amz-Expires",
      "X-Amz-Security-Token",
      "X-Amz-Signature",
      "X-Amz-SignedHeaders",
    ]);
    t.equal(q.Action, "GetCallerIdentity");
    t.equal(q.Version, "2011-06-15");
    t.equal(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    t.equal(q["X-Amz-Credential"], "AKIDEXAMPLE/20240102/us-west-2/sts/aws4_request");
    t.equal(q["X-Amz-Date"], "20240102T030405Z");
    t.equal(q["X-Amz-Expires"], "60");
    t.equal(q["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
    t.equal(q["X-Amz-Security-Token"], creds.sessionToken);
    t.notOk(
      url.searchParams.has("x-k8s-aws-id"),
      "the cluster id is a signed header, never a query parameter",
    );
    // Independent oracle: SigV4 recomputed from the documented algorithm in the test emulator.
    const oracle = sigv4PresignedSignature(
      url,
      { host: url.host, "x-k8s-aws-id": "demo" },
      ["host", "x-k8s-aws-id"],
      creds.secretAccessKey,
      "us-west-2",
    );
    t.equal(q["X-Amz-Signature"], oracle, "the SDK signer and the documented algorithm agree");
    t.equal(
      q["X-Amz-Signature"],
      "88888e4bb35c97923270ece784460b5c71df900f7f8c252257009dfaa8603e4b",
      "pinned known answer",
    );
    t.equal(
      tok.expiresAt.toISOString(),
      "2024-01-02T03:18:05.000Z",
      "14 minutes: the authenticator accepts 15 from X-Amz-Date",
    );
  },
);

t.test(
  "the authenticator's checks accept it for the signed cluster only, and only for 15 minutes",
  async (t) => {
    const tok = await eksToken({
      clusterName: "demo",
      region: "eu-central-1",
      credentials: creds,
      now: signedAt,
    });
    const cfg = {
      clusterName: "demo",
      accessKeyId: creds.accessKeyId,
      secretAccessKey: creds.secretAccessKey,
      stsHosts: ["sts.eu-central-1.amazonaws.com"],
      user: "u",
    };
    const later = new Date(signedAt.getTime() + 60_000);
    t.equal(verifyEksToken(tok.token, cfg, later), undefined);
    t.match(
      verifyEksToken(tok.token, { ...cfg, clusterName: "other" }, later),
      /signature mismatch/,
    );
    t.match(
      verifyEksToken(tok.token, { ...cfg, secretAccessKey: "x" }, later),
      /signature mismatch/,
    );
    t.match(verifyEksToken(tok.token, cfg, new Date(signedAt.getTime() + 16 * 60_000)), /expired/);
    t.match(verifyEksToken(tok.token + "=", cfg, later), /base64url/);
  },
);

t.test("no session token → no X-Amz-Security-Token; partitions pick their STS host", async (t) => {
  const tok = await eksToken({
    clusterName: "c",
    region: "cn-north-1",
    credentials: { accessKeyId: "AKID", secretAccessKey: "s" },
    now: signedAt,
  });
  const url = decodeEksToken(tok.token)!;
  t.equal(url.host, "sts.cn-north-1.amazonaws.com.cn");
  t.notOk(url.searchParams.has("X-Amz-Security-Token"));
  t.equal(stsHost("us-east-1"), "sts.us-east-1.amazonaws.com");
  t.equal(decodeEksToken("Bearer-ish"), undefined);
  await t.rejects(
    eksToken({ clusterName: "", region: "us-east-1", credentials: creds }),
    /cluster name is required/,
  );
});

t.test(
  "credentials from the SDK's default provider chain (environment here, the instance role on EC2)",
  async (t) => {
    const saved = { ...process.env };
    t.teardown(() => {
      process.env = saved;
    });
    process.env.AWS_ACCESS_KEY_ID = "AKIAFROMENVIRONMENT1";
    process.env.AWS_SECRET_ACCESS_KEY = "secret-from-env";
    delete process.env.AWS_SESSION_TOKEN;
    delete process.env.AWS_PROFILE;
    const tok = await eksToken({ clusterName: "demo", region: "us-west-2", now: signedAt });
    const url = decodeEksToken(tok.token)!;
    t.match(
      url.searchParams.get("X-Amz-Credential"),
      /^AKIAFROMENVIRONMENT1\/20240102\/us-west-2\/sts\/aws4_request$/,
    );
    const cfg = {
      clusterName: "demo",
      accessKeyId: "AKIAFROMENVIRONMENT1",
      secretAccessKey: "secret-from-env",
      stsHosts: ["sts.us-west-2.amazonaws.com"],
      user: "u",
    };
    t.equal(verifyEksToken(tok.token, cfg, signedAt), undefined);
  },
);
