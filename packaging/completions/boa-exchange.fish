# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_boa_exchange_global_optspecs
    string join \n socket= json config= h/help V/version
end

function __fish_boa_exchange_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_boa_exchange_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_boa_exchange_using_subcommand
    set -l cmd (__fish_boa_exchange_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -s V -l version -d 'Print version'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "serve" -d 'Run the daemon in the foreground'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "check-config" -d 'Validate a config file and exit (0 ok, 2 invalid)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "demo" -d 'The whole product against a built-in sandbox (no network, keys or config needed)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "status" -d 'Daemon: health, next run, companies, last fixing, store (like `systemctl status`)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "companies" -d 'List companies (active only unless --all)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "company" -d 'One company\'s sync status'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "sync" -d 'Sync one company, or every active company with --all'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "set" -d 'Change a company\'s settings'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "backfill" -d 'Write the rates in force for a date range (only what differs in QuickBooks)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "disconnect" -d 'Revoke at Intuit and soft-delete here'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "rates" -d 'The stored BoA fixing (the one in force now when no date)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "fetch" -d 'Scrape BoA now and store the fixing'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "connect-url" -d 'Print a fresh authorization link for a customer'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "logs" -d 'Recent scrape/sync records of one company'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "import-archive" -d 'Import BoA history from a yearly workbook (.xlsx): a local FILE, or `--year YYYY` downloaded from BoA\'s archive; `--list` shows the workbooks BoA offers'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "adopt" -d 'Take over an existing QuickBooks connection: its refresh token is read from standard input (never an argument)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "import-connections" -d 'Bring many connections over from a JSON Lines file (e.g. the predecessor\'s export)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "backup" -d 'A consistent copy of the whole store, taken while the daemon runs (0600, written under a temporary name and renamed when complete)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "restore" -d 'Load a backup into an empty store, with the daemon stopped (every line checked first)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "completions" -d 'Print the shell completion script (the .deb installs bash, zsh and fish ones)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "manpage" -d 'Print the man page, boa-exchange(8), in roff (the .deb installs it)'
complete -c boa-exchange -n "__fish_boa_exchange_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand serve" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand serve" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand serve" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand serve" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand check-config" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand check-config" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand check-config" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand demo" -l port -d 'Port of the daemon on 127.0.0.1' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand demo" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand demo" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand demo" -l once -d 'Exit after the report (0 ok, 1 a step failed) instead of serving'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand demo" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand demo" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand status" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand status" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand status" -s v -l verbose -d 'Also the internals: pid, sockets, the scheduler\'s clock, bad records, in-flight counts'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand status" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand status" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand companies" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand companies" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand companies" -l all -d 'Include disconnected companies'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand companies" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand companies" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand company" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand company" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand company" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand company" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand sync" -l date -d 'Rate date (default: today in Europe/Tirane)' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand sync" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand sync" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand sync" -l all -d 'Every active company'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand sync" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand sync" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -l sync-enabled -d 'Include in automatic syncs' -r -f -a "true\t''
false\t''"
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -l home-currency -d 'Home currency (three letters)' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -l name -d 'Display name' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -l fill-non-business-days -d 'Also write weekend/holiday dates' -r -f -a "true\t''
false\t''"
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -l drift -d 'What a sync does about a rate changed in QuickBooks after we confirmed it' -r -f -a "correct\t''
report\t''"
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand set" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backfill" -l from -d 'First date' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backfill" -l to -d 'Last date (at most 366 dates, not after today)' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backfill" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backfill" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backfill" -l dry-run -d 'Read and show the plan; write nothing'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backfill" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backfill" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand disconnect" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand disconnect" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand disconnect" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand disconnect" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand rates" -l date -d 'Date' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand rates" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand rates" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand rates" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand rates" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand fetch" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand fetch" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand fetch" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand fetch" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand connect-url" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand connect-url" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand connect-url" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand connect-url" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand logs" -l limit -d 'How many' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand logs" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand logs" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand logs" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand logs" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-archive" -l year -d 'Download this year\'s workbook from BoA\'s archive index and import it' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-archive" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-archive" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-archive" -l list -d 'List the workbooks on BoA\'s archive index page'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-archive" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-archive" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand adopt" -l name -d 'Display name instead of the one QuickBooks gives' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand adopt" -l home-currency -d 'Home currency instead of the one QuickBooks gives' -r
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand adopt" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand adopt" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand adopt" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand adopt" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-connections" -l fernet-key-file -d 'File holding the predecessor\'s Fernet key (for `refresh_token_fernet`)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-connections" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-connections" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-connections" -l dry-run -d 'Parse and decrypt every line, contact nobody, store nothing'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-connections" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand import-connections" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backup" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backup" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backup" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand backup" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand restore" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand restore" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand restore" -l dry-run -d 'Check everything and print the counts per kind; write nothing'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand restore" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand restore" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand completions" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand completions" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand completions" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand completions" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand manpage" -l socket -d 'Control socket (default: the one the config names)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand manpage" -l config -d 'Config file (default: /etc/boa-exchange/config.toml when it exists, else built-in defaults)' -r -F
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand manpage" -l json -d 'Print the daemon\'s JSON answer unchanged'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand manpage" -s h -l help -d 'Print help'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "serve" -d 'Run the daemon in the foreground'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "check-config" -d 'Validate a config file and exit (0 ok, 2 invalid)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "demo" -d 'The whole product against a built-in sandbox (no network, keys or config needed)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "status" -d 'Daemon: health, next run, companies, last fixing, store (like `systemctl status`)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "companies" -d 'List companies (active only unless --all)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "company" -d 'One company\'s sync status'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "sync" -d 'Sync one company, or every active company with --all'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "set" -d 'Change a company\'s settings'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "backfill" -d 'Write the rates in force for a date range (only what differs in QuickBooks)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "disconnect" -d 'Revoke at Intuit and soft-delete here'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "rates" -d 'The stored BoA fixing (the one in force now when no date)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "fetch" -d 'Scrape BoA now and store the fixing'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "connect-url" -d 'Print a fresh authorization link for a customer'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "logs" -d 'Recent scrape/sync records of one company'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "import-archive" -d 'Import BoA history from a yearly workbook (.xlsx): a local FILE, or `--year YYYY` downloaded from BoA\'s archive; `--list` shows the workbooks BoA offers'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "adopt" -d 'Take over an existing QuickBooks connection: its refresh token is read from standard input (never an argument)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "import-connections" -d 'Bring many connections over from a JSON Lines file (e.g. the predecessor\'s export)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "backup" -d 'A consistent copy of the whole store, taken while the daemon runs (0600, written under a temporary name and renamed when complete)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "restore" -d 'Load a backup into an empty store, with the daemon stopped (every line checked first)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "completions" -d 'Print the shell completion script (the .deb installs bash, zsh and fish ones)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "manpage" -d 'Print the man page, boa-exchange(8), in roff (the .deb installs it)'
complete -c boa-exchange -n "__fish_boa_exchange_using_subcommand help; and not __fish_seen_subcommand_from serve check-config demo status companies company sync set backfill disconnect rates fetch connect-url logs import-archive adopt import-connections backup restore completions manpage help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
