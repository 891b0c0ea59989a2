// The README's TypeScript examples compile against the package (strict, as the code does).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { test } from "node:test";

const root = fileURLToPath(new URL("..", import.meta.url));
// Under node_modules: never committed, and inside the package, so `pgqueue-client` resolves
// to this package itself (its "exports").
const scratch = `${root}node_modules/.readme-check/`;

test("the README's ts examples type-check", async () => {
  const readme = readFileSync(`${root}README.md`, "utf8");
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1] ?? "");
  assert.ok(blocks.length >= 2, "the README has its examples");
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  blocks.forEach((block, i) => writeFileSync(`${scratch}example-${i + 1}.ts`, `${block}\nexport {};\n`));
  writeFileSync(
    `${scratch}tsconfig.json`,
    JSON.stringify({ extends: "../../tsconfig.json", include: ["*.ts"], compilerOptions: { types: ["node"] } }),
  );
  const tsc = `${root}node_modules/typescript/bin/tsc`;
  try {
    await promisify(execFile)(process.execPath, [tsc, "--noEmit", "-p", scratch]);
  } catch (error) {
    const { stdout } = error as { stdout: string };
    assert.fail(`the README's examples do not compile:\n${stdout}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
