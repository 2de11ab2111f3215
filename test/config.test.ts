/**
 * Configuration: defaults, precedence (file < env < flags), durations, and a
 * refusal with ERR_CONFIG_INVALID for anything malformed. Every load passes an
 * explicit env and a temporary cwd so the real environment cannot leak in.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { loadConfig, parseDurationSeconds, type LoadConfigOptions } from '../src/core/config.js';
import { WritError, isWritError } from '../src/core/errors.js';

const REPO_POLICIES = fileURLToPath(new URL('../policies', import.meta.url));

const made: string[] = [];
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'writ-config-'));
  made.push(dir);
  return dir;
}

/** Writes `text` to `<dir>/<name>` (creating folders) and returns the path. */
function writeFile(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return path;
}

/** Loads with a config file holding `yaml`, in a fresh temp cwd, with no environment. */
function loadYaml(yaml: string, options: Omit<LoadConfigOptions, 'configFile' | 'cwd'> = {}) {
  const cwd = tempDir();
  const configFile = writeFile(cwd, 'writ.yaml', yaml);
  return loadConfig({ env: {}, ignoreDefaultFile: true, ...options, cwd, configFile });
}

const isConfigInvalid = (error: unknown): boolean => error instanceof WritError && error.code === 'ERR_CONFIG_INVALID';

describe('parseDurationSeconds', () => {
  const table: [unknown, number | undefined][] = [
    ['5m', 300],
    ['1h', 3600],
    ['90s', 90],
    ['1d', 86400],
    ['1500ms', 1],
    ['0s', 0],
    ['120', 120],
    [120, 120],
    [0, 0],
    ['', undefined],
    ['5', 5],
    ['5 m', undefined],
    ['5M', undefined],
    ['1.5h', undefined],
    ['-5m', undefined],
    ['m', undefined],
    ['5w', undefined],
    [' 5m', undefined],
    [-1, undefined],
    [1.5, undefined],
    [NaN, undefined],
    [Infinity, undefined],
    [null, undefined],
    [true, undefined],
    [{}, undefined],
  ];
  for (const [input, expected] of table) {
    test(`${JSON.stringify(input) ?? String(input)} is ${expected === undefined ? 'not a duration' : `${expected} seconds`}`, () => {
      assert.equal(parseDurationSeconds(input), expected);
    });
  }
});

describe('loadConfig defaults', () => {
  test('with no file, env or flags the built-in defaults apply', () => {
    const cwd = tempDir();
    const config = loadConfig({ env: {}, ignoreDefaultFile: true, cwd });
    assert.equal(config.server.port, 8750);
    assert.equal(config.server.host, '127.0.0.1');
    assert.equal(config.tokens.defaultTtl, 300);
    assert.equal(config.tokens.maxTtl, 900);
    assert.equal(config.tokens.clockSkew, 30);
    assert.equal(config.identity.devIssuer.maxTtl, 300);
    assert.equal(config.database.url, undefined);
    assert.equal(config.log.level, 'info');
    assert.equal(config.paths.dataDir, join(cwd, '.writ'));
    assert.equal(config.paths.policyDir, REPO_POLICIES);
    assert.ok(existsSync(join(config.paths.policyDir, 'resources.yaml')), 'the bundled policies are there');
    assert.equal(config.paths.configFile, null);
  });

  test('./writ.yaml in the cwd is read unless told to ignore it', () => {
    const cwd = tempDir();
    const file = writeFile(cwd, 'writ.yaml', 'server:\n  port: 9001\n');
    const found = loadConfig({ env: {}, cwd });
    assert.equal(found.server.port, 9001);
    assert.equal(found.paths.configFile, file);
    const ignored = loadConfig({ env: {}, cwd, ignoreDefaultFile: true });
    assert.equal(ignored.server.port, 8750);
    assert.equal(ignored.paths.configFile, null);
  });

  test('an explicit env hides the process environment', () => {
    const saved = process.env.WRIT_PORT;
    process.env.WRIT_PORT = '1234';
    try {
      assert.equal(loadConfig({ env: {}, ignoreDefaultFile: true, cwd: tempDir() }).server.port, 8750);
    } finally {
      if (saved === undefined) delete process.env.WRIT_PORT;
      else process.env.WRIT_PORT = saved;
    }
  });

  test('an empty file is the defaults', () => {
    const config = loadYaml('');
    assert.equal(config.server.port, 8750);
    assert.equal(config.tokens.maxTtl, 900);
  });
});

describe('loadConfig precedence: file < env < flags', () => {
  const fileYaml = [
    'server:',
    '  port: 1111',
    '  host: file.example',
    'dataDir: ./from-file',
    'database:',
    '  url: postgres://file/db',
    'log:',
    '  level: warn',
    '',
  ].join('\n');
  const env = {
    WRIT_PORT: '2222',
    WRIT_HOST: 'env.example',
    WRIT_DATA_DIR: '/env/data',
    WRIT_DATABASE_URL: 'postgresql://env/db',
    WRIT_LOG_LEVEL: 'debug',
  };

  test('the file overrides the defaults', () => {
    const config = loadYaml(fileYaml);
    assert.equal(config.server.port, 1111);
    assert.equal(config.server.host, 'file.example');
    assert.equal(config.database.url, 'postgres://file/db');
    assert.equal(config.log.level, 'warn');
    assert.match(config.paths.dataDir, /from-file$/);
  });

  test('the environment overrides the file', () => {
    const config = loadYaml(fileYaml, { env });
    assert.equal(config.server.port, 2222);
    assert.equal(config.server.host, 'env.example');
    assert.equal(config.database.url, 'postgresql://env/db');
    assert.equal(config.log.level, 'debug');
    assert.equal(config.paths.dataDir, '/env/data');
  });

  test('flags override the environment', () => {
    const config = loadYaml(fileYaml, { env, flags: { port: 3333, host: 'flag.example', dataDir: '/flag/data' } });
    assert.equal(config.server.port, 3333);
    assert.equal(config.server.host, 'flag.example');
    assert.equal(config.paths.dataDir, '/flag/data');
    assert.equal(config.database.url, 'postgresql://env/db', 'no flag for it: env still wins over the file');
  });

  test('flags left undefined change nothing', () => {
    const config = loadYaml(fileYaml, { env, flags: { port: undefined, host: undefined, dataDir: undefined } });
    assert.equal(config.server.port, 2222);
    assert.equal(config.server.host, 'env.example');
  });

  test('an empty WRIT_DATABASE_URL leaves the file\'s database in place', () => {
    assert.equal(loadYaml(fileYaml, { env: { WRIT_DATABASE_URL: '' } }).database.url, 'postgres://file/db');
  });

  test('flags apply with no file and no environment', () => {
    const cwd = tempDir();
    const config = loadConfig({ env: {}, ignoreDefaultFile: true, cwd, flags: { port: 0, dataDir: 'rel' } });
    assert.equal(config.server.port, 0);
    assert.equal(config.paths.dataDir, join(cwd, 'rel'));
  });
});

describe('loadConfig durations', () => {
  test('durations are read as strings with units or as seconds', () => {
    const config = loadYaml('tokens:\n  defaultTtl: 5m\n  maxTtl: 1h\n  clockSkew: 90s\nidentity:\n  devIssuer:\n    maxTtl: 120\n');
    assert.equal(config.tokens.defaultTtl, 300);
    assert.equal(config.tokens.maxTtl, 3600);
    assert.equal(config.tokens.clockSkew, 90);
    assert.equal(config.identity.devIssuer.maxTtl, 120);
  });

  test('the limits themselves are allowed', () => {
    const config = loadYaml('tokens:\n  defaultTtl: 24h\n  maxTtl: 24h\nidentity:\n  devIssuer:\n    maxTtl: 5m\n');
    assert.equal(config.tokens.maxTtl, 86400);
    assert.equal(config.tokens.defaultTtl, 86400);
    assert.equal(config.identity.devIssuer.maxTtl, 300);
  });
});

describe('loadConfig refuses bad configuration with ERR_CONFIG_INVALID', () => {
  const badFiles: [string, string][] = [
    ['an unknown top-level key', 'serverr:\n  port: 1\n'],
    ['an unknown nested key', 'server:\n  prot: 8080\n'],
    ['an unknown key in a deep section', 'identity:\n  devIssuer:\n    enabeld: false\n'],
    ['a port above 65535', 'server:\n  port: 70000\n'],
    ['a negative port', 'server:\n  port: -1\n'],
    ['a fractional port', 'server:\n  port: 80.5\n'],
    ['a port given as a string', 'server:\n  port: "8080"\n'],
    ['a defaultTtl above maxTtl', 'tokens:\n  defaultTtl: 10m\n  maxTtl: 5m\n'],
    ['a defaultTtl above the default maxTtl', 'tokens:\n  defaultTtl: 16m\n'],
    ['a maxTtl over 24 hours', 'tokens:\n  maxTtl: 25h\n'],
    ['a maxTtl of a day and a second', 'tokens:\n  maxTtl: 86401\n'],
    ['a task lifetime over 24 hours', 'tokens:\n  maxLifetime: 25h\n'],
    ['a delegation depth over 8', 'delegation:\n  maxDepth: 9\n'],
    ['a renewal risk limit of low (every renewal refused)', 'policy:\n  risk:\n    renewalLimit: low\n'],
    ['a dev issuer maxTtl over 5 minutes', 'identity:\n  devIssuer:\n    maxTtl: 301\n'],
    ['a malformed duration', 'tokens:\n  defaultTtl: 5 minutes\n'],
    ['a negative duration', 'tokens:\n  defaultTtl: -5\n'],
    ['a non-postgres database url', 'database:\n  url: mysql://db/x\n'],
    ['a sqlite database url', 'database:\n  url: sqlite:///tmp/x.db\n'],
    ['an unknown log level', 'log:\n  level: verbose\n'],
    ['an environment that is not a slug', 'policy:\n  environments: [Prod]\n'],
    ['an empty environment list', 'policy:\n  environments: []\n'],
    ['a YAML syntax error', 'server:\n  port: [1, 2\n'],
    ['a duplicated key', 'server:\n  port: 1\n  port: 2\n'],
    ['a list at the top level', '- server\n- port\n'],
    ['a scalar at the top level', 'just text\n'],
    ['a section that is a scalar', 'server: 8080\n'],
  ];
  for (const [name, yaml] of badFiles) {
    test(`a config file with ${name} is refused`, () => {
      assert.throws(() => loadYaml(yaml), isConfigInvalid);
    });
  }

  const badEnv: [string, NodeJS.ProcessEnv][] = [
    ['WRIT_PORT with letters', { WRIT_PORT: '80a' }],
    ['WRIT_PORT empty', { WRIT_PORT: '' }],
    ['WRIT_PORT negative', { WRIT_PORT: '-1' }],
    ['WRIT_PORT with six digits', { WRIT_PORT: '123456' }],
    ['WRIT_PORT above 65535', { WRIT_PORT: '70000' }],
    ['WRIT_PORT with spaces', { WRIT_PORT: ' 80' }],
    ['WRIT_DATABASE_URL not postgres', { WRIT_DATABASE_URL: 'mysql://x/y' }],
    ['WRIT_LOG_LEVEL unknown', { WRIT_LOG_LEVEL: 'loud' }],
    ['WRIT_HOST empty', { WRIT_HOST: '' }],
  ];
  for (const [name, env] of badEnv) {
    test(`${name} is refused`, () => {
      assert.throws(() => loadConfig({ env, ignoreDefaultFile: true, cwd: tempDir() }), isConfigInvalid);
    });
  }

  test('a bad flag is refused', () => {
    assert.throws(() => loadConfig({ env: {}, ignoreDefaultFile: true, cwd: tempDir(), flags: { port: 65536 } }), isConfigInvalid);
  });

  test('a --config file that does not exist is refused, not skipped', () => {
    const cwd = tempDir();
    assert.throws(() => loadConfig({ env: {}, cwd, configFile: 'missing.yaml' }), isConfigInvalid);
    assert.throws(() => loadConfig({ env: {}, cwd, configFile: join(cwd, 'nope', 'writ.yaml') }), isConfigInvalid);
  });

  test('a bad ./writ.yaml found by default is refused too', () => {
    const cwd = tempDir();
    writeFile(cwd, 'writ.yaml', 'bogus: 1\n');
    assert.throws(() => loadConfig({ env: {}, cwd }), isConfigInvalid);
  });
});

describe('loadConfig paths', () => {
  test('relative dataDir and policy.dir in a config file resolve against the file\'s folder', () => {
    const cwd = tempDir();
    const configFile = writeFile(cwd, join('conf', 'writ.yaml'), 'dataDir: ./state\npolicy:\n  dir: ../policies-here\n');
    const config = loadConfig({ env: {}, cwd, configFile: 'conf/writ.yaml' });
    assert.equal(config.paths.configFile, configFile);
    assert.equal(config.paths.dataDir, join(cwd, 'conf', 'state'));
    assert.equal(config.paths.policyDir, join(cwd, 'policies-here'));
  });

  test('an absolute policy.dir is kept as written', () => {
    const config = loadYaml('policy:\n  dir: /srv/writ/policies\n');
    assert.equal(config.paths.policyDir, '/srv/writ/policies');
  });

  test('a relative dataDir from the environment or a flag resolves against the cwd', () => {
    const cwd = tempDir();
    writeFile(cwd, join('conf', 'writ.yaml'), 'dataDir: ./state\n');
    const fromEnv = loadConfig({ env: { WRIT_DATA_DIR: 'env-data' }, cwd, configFile: 'conf/writ.yaml' });
    assert.equal(fromEnv.paths.dataDir, join(cwd, 'env-data'));
    const fromFlag = loadConfig({ env: {}, cwd, configFile: 'conf/writ.yaml', flags: { dataDir: 'flag-data' } });
    assert.equal(fromFlag.paths.dataDir, join(cwd, 'flag-data'));
  });
});

describe('loadConfig result', () => {
  test('the configuration is deeply frozen', () => {
    const config = loadYaml('server:\n  port: 1\n');
    for (const part of [config, config.server, config.tokens, config.identity, config.identity.devIssuer, config.policy, config.policy.environments, config.paths, config.database, config.log]) {
      assert.equal(Object.isFrozen(part), true);
    }
    assert.throws(() => {
      (config.server as { port: number }).port = 2;
    }, TypeError);
    assert.throws(() => {
      (config.policy.environments as string[]).push('anywhere');
    }, TypeError);
    assert.throws(() => {
      (config.paths as { dataDir: string }).dataDir = '/tmp';
    }, TypeError);
    assert.equal(config.server.port, 1);
  });

  test('one load never changes the defaults another load sees', () => {
    const first = loadConfig({ env: {}, ignoreDefaultFile: true, cwd: tempDir() });
    const second = loadYaml('policy:\n  environments: [dev]\n');
    const third = loadConfig({ env: {}, ignoreDefaultFile: true, cwd: tempDir() });
    assert.deepEqual(second.policy.environments, ['dev']);
    assert.deepEqual(third.policy.environments, first.policy.environments);
    assert.deepEqual(third.policy.environments, ['development', 'sandbox', 'staging', 'production']);
  });
});

describe('clock skew is bounded', () => {
  for (const [skew, maxTtl] of [['10m', '15m'], ['30d', '15m'], ['2m', '1m']] as const) {
    test(`tokens.clockSkew ${skew} with maxTtl ${maxTtl} is refused: skew extends every token`, () => {
      const dir = mkdtempSync(join(tmpdir(), 'writ-skew-'));
      try {
        const file = join(dir, 'writ.yaml');
        writeFileSync(file, `tokens:\n  clockSkew: ${skew}\n  maxTtl: ${maxTtl}\n  defaultTtl: 30s\n`);
        assert.throws(() => loadConfig({ configFile: file, env: {}, cwd: dir }), (error: unknown) => isWritError(error, 'ERR_CONFIG_INVALID'));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
