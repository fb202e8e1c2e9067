// Where the repository is, for tests at any depth under test/.
import path from "node:path";
import { pathToFileURL } from "node:url";

export const REPO = path.resolve(import.meta.dirname, "../..");
/** REPO as a file: URL with a trailing slash, to resolve repo-relative paths against */
export const REPO_URL = pathToFileURL(REPO + "/");
